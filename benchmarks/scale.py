"""Scale: train and align a synthetic DBP1M-like pair from 15k to 1M
entities per KG, rendered between markers in docs/benchmarks.md.

    python benchmarks/scale.py                         # 15k 100k 300k 1M
    python benchmarks/scale.py --sizes 100k 1M --force # both in one run
    python benchmarks/scale.py --dry-run               # print the commands
    python benchmarks/scale.py --render-only
    python benchmarks/scale.py --sizes 300 --epochs 1 --run-dir /tmp/s \\
        --results /tmp/s/scale.jsonl --doc /tmp/s/benchmarks.md  # smoke

For each size N, as subprocesses (so that peak memory is per command):

    ricea train --dataset synthetic --entities N --epochs E --out RUN/N \\
        --no-progress --overwrite
    ricea align RUN/N/best.pt --output RUN/N/pairs.tsv --one-to-one

Wall time and peak RSS of each child come from ``os.wait4`` (``ru_maxrss``,
KiB on Linux: the child and the descendants it waited for). Median epoch
time, validation and test metrics come from ``RUN/N/metrics.json``. A third
child regenerates the pair (the spec of ``RUN/N/run.json``) and scores the
exported one-to-one pairs against the gold test pairs (precision and
recall); its memory is its own, never the parent's or the measured
commands'. The parent imports neither torch nor the library.

One JSON line per size goes to ``--results``; a size already there (same N
and epochs, finished or failed) is skipped unless ``--force``. Every row
carries the ``run_id`` of its invocation, and the scaling ratio is only
computed from rows of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DOCS = os.path.join(REPO, 'docs')
DEFAULT_SIZES = (15_000, 100_000, 300_000, 1_000_000)
DEFAULT_EPOCHS = 3
START, END = '<!-- scale:start -->', '<!-- scale:end -->'
SECTION = ('## Scale: train and align a synthetic pair from 15k to 1M '
           'entities per KG')
RATIO_SIZES = (100_000, 1_000_000)  # epoch time 1M / 100k, divided by 10
KIB_PER_GIB = 2 ** 20


# -- small helpers (tested in tests/test_benchmark_scale.py) ------------------
def parse_size(text: str) -> int:
    """``'15000'``, ``'15k'``, ``'1M'``, ``'1.5m'`` -> entities per KG."""
    m = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*', str(text))
    if not m:
        raise argparse.ArgumentTypeError(
            f'{text!r}: not a size (e.g. 15000, 100k, 1M)')
    value = float(m.group(1)) * {'': 1, 'k': 1e3, 'm': 1e6}[
        m.group(2).lower()]
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f'{text!r}: not a whole, positive '
                                         'entity count')
    return int(value)


def short_size(n: int) -> str:
    """15000 -> '15k', 1000000 -> '1M', 1500000 -> '1.5M', 300 -> '300'."""
    if n >= 1_000_000 and n % 100_000 == 0:
        return f'{n / 1_000_000:g}M'
    if n >= 1_000 and n % 1_000 == 0:
        return f'{n // 1_000}k'
    return str(n)


def row_key(entities: int, epochs: int) -> str:
    return f'synthetic|N={entities}|epochs={epochs}'


def read_rows(path: str) -> Dict[str, Dict]:
    """Rows of the JSON-lines file by key; a later line replaces an earlier
    one with the same key (``--force`` appends)."""
    out: Dict[str, Dict] = {}
    if not os.path.isfile(path):
        return out
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[r['key']] = r
    return out


def gib(kib: Optional[float]) -> Optional[float]:
    return None if kib is None else kib / KIB_PER_GIB


def per_1k_pairs(epoch_time_s: Optional[float],
                 train_pairs: Optional[int]) -> Optional[float]:
    """Seconds per epoch per 1,000 seed (training) pairs."""
    if epoch_time_s is None or not train_pairs:
        return None
    return epoch_time_s / (train_pairs / 1000)


def scaling_ratio(rows, sizes=RATIO_SIZES) -> Optional[Dict]:
    """``(t(big) / t(small)) / (big / small)`` of the median epoch time,
    from the latest run (``run_id``) holding a finished row of both sizes;
    None when no single run has both. <= 1 means at most linear."""
    small, big = sizes
    by_run: Dict[str, Dict[int, Dict]] = {}
    for r in rows:
        if r.get('status') == 'ok' and r.get('epoch_time_s'):
            by_run.setdefault(r['run_id'], {})[r['entities']] = r
    for run_id in sorted(by_run, reverse=True):
        got = by_run[run_id]
        if small in got and big in got:
            t_s, t_b = got[small]['epoch_time_s'], got[big]['epoch_time_s']
            return dict(run_id=run_id, small=t_s, big=t_b,
                        ratio=(t_b / t_s) / (big / small))
    return None


def parse_entity(name: str, side: str,
                 lookup: Optional[Dict[str, int]] = None) -> int:
    """Row of an exported entity name: ``side:<row>`` (entities without a
    URI, e.g. the synthetic pair), else through :obj:`lookup` (URI -> row).
    """
    prefix = side + ':'
    if name.startswith(prefix) and name[len(prefix):].isdigit():
        return int(name[len(prefix):])
    if lookup is None or name not in lookup:
        raise ValueError(f'{name!r}: not a {side} entity of this pair')
    return lookup[name]


def machine_info() -> Dict:
    """Cores, RAM (``/proc/meminfo``) and the torch version, without
    importing torch (the parent stays small)."""
    ram = None
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    ram = int(line.split()[1]) / KIB_PER_GIB
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version
        torch_version = version('torch')
    except Exception:  # noqa: BLE001 - only for the record
        torch_version = None
    cores = os.cpu_count()
    text = (f'{cores} cores, '
            f'{"?" if ram is None else f"{ram:.0f}"} GiB RAM, '
            f'torch {torch_version}')
    return dict(cores=cores, ram_gib=ram, torch=torch_version, text=text)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                             cwd=REPO, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


# -- children -----------------------------------------------------------------
def run_child(cmd: List[str], log_path: str, timeout: Optional[float],
              env: Optional[Dict[str, str]] = None) -> Dict:
    """Runs :obj:`cmd` with stdout and stderr to :obj:`log_path`; returns
    ``rc``, ``wall_s``, ``peak_rss_kib`` (``ru_maxrss`` of ``os.wait4``)
    and ``timed_out``. On timeout the child's process group is killed."""
    with open(log_path, 'w') as log:
        log.write('$ ' + shlex.join(cmd) + '\n')
        log.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO, start_new_session=True)
        deadline = None if timeout is None else start + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # our own child's group
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
        wall = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # reaped here: Popen must not wait again
    return dict(rc=rc, wall_s=wall, peak_rss_kib=usage.ru_maxrss,
                timed_out=timed_out)


def tail(path: str, lines: int = 5) -> str:
    try:
        with open(path) as f:
            return ''.join(f.readlines()[-lines:]).strip()
    except OSError:
        return ''


def child_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    if threads:
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[var] = str(threads)
    return env


def commands(n: int, epochs: int, out: str, threads: int) -> Dict:
    """The train and align commands of one size, as run (``python -m
    ricea_pyg.cli`` is the ``ricea`` command) and as shown."""
    train = ['train', '--dataset', 'synthetic', '--entities', str(n),
             '--epochs', str(epochs), '--out', out, '--no-progress',
             '--overwrite'] + (['--threads', str(threads)] if threads
                               else [])
    align = ['align', os.path.join(out, 'best.pt'), '--output',
             os.path.join(out, 'pairs.tsv')]
    one = ['align', os.path.join(out, 'best.pt'), '--output',
           os.path.join(out, 'pairs_1to1.tsv'), '--one-to-one']
    base = [sys.executable, '-m', 'ricea_pyg.cli']
    return dict(train=base + train, align=base + align,
                one_to_one=base + one,
                shown=['ricea ' + shlex.join(train),
                       'ricea ' + shlex.join(align),
                       'ricea ' + shlex.join(one)])


def measure(n: int, args, run_id: str) -> Dict:
    """Trains, aligns and scores one size; never raises for a failed
    child (the row says what failed)."""
    out = os.path.join(args.run_dir, str(n))
    os.makedirs(out, exist_ok=True)
    cmds = commands(n, args.epochs, out, args.threads)
    env = child_env(args.threads)
    row: Dict = dict(entities=n, epochs=args.epochs, run_id=run_id,
                     run_dir=out, commands=cmds['shown'], threads=args.threads
                     or None)
    print(f'[{short_size(n)}] {cmds["shown"][0]}', flush=True)
    train = run_child(cmds['train'], os.path.join(out, 'train.log'),
                      args.timeout, env)
    row.update(train_wall_s=train['wall_s'],
               train_peak_rss_gib=gib(train['peak_rss_kib']))
    if train['rc'] != 0 or not os.path.isfile(os.path.join(out,
                                                           'metrics.json')):
        row['status'] = ('train timed out' if train['timed_out'] else
                         f'train failed (rc {train["rc"]})')
        row['error'] = (f'killed after {args.timeout:g} s (--timeout)'
                        if train['timed_out'] else
                        tail(os.path.join(out, 'train.log')))
        return row
    with open(os.path.join(out, 'metrics.json')) as f:
        m = json.load(f)
    val, test = m.get('val') or {}, m.get('test') or {}
    row.update(
        epochs_run=m.get('epochs_run'), train_pairs=m.get('train_pairs'),
        epoch_time_s=m.get('epoch_time_s'), fit_time_s=m.get('fit_time_s'),
        train_time_in_process_s=m.get('wall_time_s'),
        epoch_time_per_1k_pairs_s=per_1k_pairs(m.get('epoch_time_s'),
                                               m.get('train_pairs')),
        val={k: val.get(k) for k in ('hits@1', 'hits@10', 'mrr',
                                     'approx_queries') if k in val},
        val_approximate='approx_queries' in val,
        test={k: test.get(k) for k in ('hits@1', 'hits@10', 'mrr',
                                       'one_to_one_hits@1',
                                       'approx_queries') if k in test},
        config=m.get('config'))
    print(f'[{short_size(n)}] trained: {train["wall_s"]:.0f} s, epoch '
          f'{show(m.get("epoch_time_s"), 2)} s, peak '
          f'{row["train_peak_rss_gib"]:.2f} GiB; {cmds["shown"][1]}',
          flush=True)
    with open(os.path.join(out, 'run.json')) as f:
        spec = {k: v for k, v in json.load(f)['data'].items()
                if k != 'files'}
    # The user's command (top-1 by CSLS, both directions), then the global
    # one-to-one assignment over FAISS candidates (up to --one-to-one-max).
    modes = [('', 'align', 'pairs.tsv')]
    if args.one_to_one_max is None or n <= args.one_to_one_max:
        modes.append(('1to1_', 'one_to_one', 'pairs_1to1.tsv'))
    for prefix, cmd, name in modes:
        log = os.path.join(out, f'{prefix}align.log')
        align = run_child(cmds[cmd], log, args.timeout, env)
        row.update({f'align_{prefix}wall_s': align['wall_s'],
                    f'align_{prefix}peak_rss_gib': gib(
                        align['peak_rss_kib'])})
        pairs = os.path.join(out, name)
        if align['rc'] != 0 or not os.path.isfile(pairs):
            row['status'] = (f'align {prefix}timed out' if align['timed_out']
                             else f'align {prefix}failed (rc {align["rc"]})')
            row['error'] = (f'killed after {args.timeout:g} s (--timeout)'
                            if align['timed_out'] else tail(log))
            return row
        row[f'align_{prefix}output'] = tail(log, 1)
        score_log = os.path.join(out, f'{prefix}score.log')
        score = run_child([sys.executable, os.path.abspath(__file__),
                           '--score-pairs', pairs, '--spec',
                           json.dumps(spec)], score_log, args.timeout, env)
        result = None
        if score['rc'] == 0:
            for line in reversed(tail(score_log, 3).splitlines()):
                if line.startswith('{'):
                    result = json.loads(line)
                    break
        if result is None:
            row[f'{prefix}score_error'] = tail(score_log)
        else:
            row.update({(k if not prefix else k.replace('pairs_',
                                                        'pairs_' + prefix)):
                        v for k, v in result.items()})
        print(f'[{short_size(n)}] {prefix or "top-1 "}align: '
              f'{align["wall_s"]:.0f} s', flush=True)
    row['status'] = 'ok'
    if row.get('train_wall_s') and row.get('align_wall_s'):
        row['end_to_end_s'] = row['train_wall_s'] + row['align_wall_s']
    return row


def score_pairs(pairs_path: str, spec: Dict) -> Dict:
    """In a child process: precision and recall of the exported pairs,
    against the gold test pairs (predictions of test sources only) and
    against all gold pairs of the unaligned sources (validation + test)."""
    import torch

    from ricea_pyg.data.schema import ALIGN
    from ricea_pyg.datasets.registry import open_dataset
    from ricea_pyg.explain import entity_uris
    from ricea_pyg.search import pair_precision_recall
    data, _ = open_dataset(spec)
    lookups = {}
    for side in ('source', 'target'):
        uris = getattr(data[side], 'uri', None)
        lookups[side] = (None if uris is None else
                         {u: i for i, u in enumerate(entity_uris(data,
                                                                 side))})
    src, tgt = [], []
    with open(pairs_path) as f:
        header = f.readline().rstrip('\n').split('\t')
        if header[:2] != ['source', 'target']:
            raise ValueError(f'{pairs_path}: header {header} is not an '
                             'export of ricea align')
        for line in f:
            s, t = line.split('\t', 2)[:2]
            src.append(parse_entity(s, 'source', lookups['source']))
            tgt.append(parse_entity(t, 'target', lookups['target']))
    pred = torch.tensor([src, tgt], dtype=torch.long).view(2, -1)
    split = data[ALIGN]
    test = split.test_index
    unaligned = torch.cat([split.val_index, test], dim=1)
    on_test = torch.isin(pred[0], test[0])
    out = {'pairs_exported': pred.size(1)}
    for name, gold, p in (('pairs_test', test, pred[:, on_test]),
                          ('pairs_unaligned', unaligned, pred)):
        r = pair_precision_recall(p, gold)
        out[name] = {k: (int(v) if k.startswith('num_') else v)
                     for k, v in r.items()}
    return out


# -- rendering ----------------------------------------------------------------
def show(value, digits=3) -> str:
    if value is None:
        return '—'
    if isinstance(value, float) and abs(value) >= 100:
        return f'{value:,.0f}'
    return f'{value:.{digits}f}'


def _get(row, *path):
    for p in path:
        if not isinstance(row, dict) or p not in row:
            return None
        row = row[p]
    return row


def width(row) -> str:
    """``channels`` and whether training sampled neighbourhoods, as the
    run's config recorded them (``—`` where it left them unset)."""
    c = row.get('config') or {}
    sampled = {True: 'yes', False: 'no'}.get(c.get('sampled'), '—')
    return f'{c.get("channels") or "—"}, {sampled}'


def table_rows(rows) -> List[Dict]:
    """The latest row per size and epoch count, by size."""
    return sorted(rows, key=lambda r: (r['entities'], r['epochs']))


def render_block(rows, results_name: str, plot_rel: Optional[str],
                 plot_error: Optional[str] = None) -> str:
    """The markdown between the markers (without them)."""
    rows = table_rows(rows)
    lines = [
        '', f'Generated by `benchmarks/scale.py` from `{results_name}`; do '
        'not edit by hand (rerun with `--render-only`).', '',
        'Every command of a size is its own subprocess, timed and measured '
        '(peak RSS = `ru_maxrss` of `os.wait4`, the child with the '
        'descendants it waited for): `ricea train --dataset synthetic '
        '--entities N --epochs E --no-progress` (a DBP1M-like synthetic '
        'pair: power-law degrees, many relation types; 30 % train, 10 % '
        'validation, 60 % test pairs), `ricea align best.pt` (each '
        'unaligned source\'s best target by CSLS; "end to end" is train '
        'plus this) and `ricea align best.pt --one-to-one` (a global '
        'one-to-one assignment among the unaligned entities by sparse '
        'Sinkhorn over FAISS candidates). Epoch time is the median of '
        '`metrics.json`; "s / epoch / 1k" divides it by the thousands of '
        'seed (training) pairs. Wall times are of the whole command: '
        'start-up, generating the pair and (train) the final test '
        'evaluation included. Validation metrics marked * are '
        'approximate (IVF search on a seeded sample of queries). '
        'Precision / recall score the exported pairs whose source is a '
        'test entity against the gold test pairs (scored in a third child '
        'that regenerates the pair).', '']
    if not rows:
        lines += ['**Not run yet.** No measurement exists; run', '',
                  '    python benchmarks/scale.py', '',
                  'then this block is rendered from the results.', '']
        return '\n'.join(lines)
    lines += ['| N per KG | epochs | width, sampled | train pairs | epoch s | '
              's / epoch / 1k | train wall s | train peak GiB | align wall s '
              '| align peak GiB | end to end min | val Hits@1 / MRR | '
              'test Hits@1 | top-1 P (test) | 1-to-1 align s | 1-to-1 P / R '
              '(test) | run |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|'
              '---|---|']
    for r in rows:
        ok = r.get('status') == 'ok'
        star = '*' if r.get('val_approximate') else ''
        val = (f'{show(_get(r, "val", "hits@1"))} / '
               f'{show(_get(r, "val", "mrr"))}{star}'
               if _get(r, 'val', 'hits@1') is not None else '—')
        top1 = show(_get(r, 'pairs_test', 'precision'))
        p = _get(r, 'pairs_1to1_test', 'precision')
        rec = _get(r, 'pairs_1to1_test', 'recall')
        pr = f'{show(p)} / {show(rec)}' if p is not None else '—'
        e2e = r.get('end_to_end_s')
        status = '' if ok else f' **{r.get("status", "?")}**'
        lines.append(
            f'| {short_size(r["entities"])}{status} | {r["epochs"]} | '
            f'{width(r)} | '
            f'{r.get("train_pairs") or "—"} | {show(r.get("epoch_time_s"), 2)}'
            f' | {show(r.get("epoch_time_per_1k_pairs_s"), 3)} | '
            f'{show(r.get("train_wall_s"), 0)} | '
            f'{show(r.get("train_peak_rss_gib"), 2)} | '
            f'{show(r.get("align_wall_s"), 0)} | '
            f'{show(r.get("align_peak_rss_gib"), 2)} | '
            f'{show(None if e2e is None else e2e / 60, 1)} | {val} | '
            f'{show(_get(r, "test", "hits@1"))} | {top1} | '
            f'{show(r.get("align_1to1_wall_s"), 0)} | {pr} | '
            f'{r.get("run_id", "—")} |')
    lines.append('')
    failed = [r for r in rows if r.get('status') != 'ok']
    for r in failed:
        err = (r.get('error') or '').splitlines()
        lines.append(f'* {short_size(r["entities"])}: {r.get("status")}'
                     + (f': `{err[-1][:160]}`' if err else '') + '.')
    if failed:
        lines.append('')
    small, big = RATIO_SIZES
    ratio = scaling_ratio(rows)
    if ratio is None:
        lines += [f'**Scaling:** not measurable yet: no single run '
                  f'(`run_id`) holds finished rows of both '
                  f'{short_size(small)} and {short_size(big)} (rerun both '
                  f'with `--sizes {short_size(small)} {short_size(big)} '
                  f'--force`).', '']
    else:
        verdict = ('at most linear' if ratio['ratio'] <= 1 else
                   'worse than linear')
        lines += [f'**Scaling (run {ratio["run_id"]}):** epoch time '
                  f'{short_size(big)} / {short_size(small)} divided by '
                  f'{big // small} = {ratio["big"]:.2f} s / '
                  f'{ratio["small"]:.2f} s / {big // small} = '
                  f'**{ratio["ratio"]:.2f}** ({verdict}; ≤ 1 means the '
                  f'epoch grows at most linearly in N, with whatever width '
                  f'and sampling each size chose by itself).', '']
    first = rows[-1]
    commits = ', '.join(sorted({r.get('commit') or '?' for r in rows}))
    dates = sorted({r.get('date') or '?' for r in rows})
    when = dates[0] if dates[0] == dates[-1] else f'{dates[0]} to {dates[-1]}'
    lines += [f'Machine: {_get(first, "machine", "text") or "?"}; commit '
              f'{commits}; {when}.', '', 'Commands (per size):', '']
    lines += [f'    {c}' for c in first.get('commands', [])] + ['']
    if plot_rel:
        lines += ['Log-log: median epoch time, align wall time and peak RSS '
                  'against N.', '', f'![scale]({plot_rel})', '']
    elif plot_error:
        lines += [f'({plot_error}.)', '']
    return '\n'.join(lines)


def plot(rows, path) -> Optional[str]:
    """Log-log epoch time, align time and peak RSS against N; an error line
    instead of raising when matplotlib is absent or nothing finished."""
    ok = [r for r in table_rows(rows) if r.get('epoch_time_s')]
    if not ok:
        return 'no finished size yet: no plot'
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return ('matplotlib is not installed: no plot (`pip install '
                'matplotlib`, then rerun with --render-only)')
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))

    def series(ax, key, label, marker):
        pts = [(r['entities'], r[key]) for r in ok if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=label)

    series(ax_t, 'epoch_time_s', 'median epoch time (train)', 'o')
    series(ax_t, 'align_wall_s', 'ricea align (wall)', 's')
    series(ax_t, 'align_1to1_wall_s', 'ricea align --one-to-one (wall)', '^')
    series(ax_m, 'train_peak_rss_gib', 'ricea train', 'o')
    series(ax_m, 'align_peak_rss_gib', 'ricea align', 's')
    ax_t.set_ylabel('seconds')
    ax_m.set_ylabel('peak RSS (GiB)')
    for ax in (ax_t, ax_m):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('entities per KG')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def update_doc(text: str, block: str) -> str:
    """:obj:`text` with :obj:`block` between the markers; the section and
    markers are appended at the end when missing. Nothing outside the
    markers changes."""
    start, end = text.find(START), text.find(END)
    if start < 0 and end < 0:
        return (text.rstrip('\n') + '\n\n' + SECTION + '\n\n' + START +
                '\n' + block.strip('\n') + '\n' + END + '\n')
    if start < 0 or end < start:
        raise SystemExit(f'the doc has a broken {START} ... {END} pair: fix '
                         'it by hand')
    return (text[:start + len(START)] + '\n' + block.strip('\n') + '\n' +
            text[end:])


def render(results: Dict[str, Dict], args) -> None:
    rows = list(results.values())
    plot_err = plot(rows, args.plot) if rows else None
    doc_dir = os.path.dirname(os.path.abspath(args.doc))
    plot_rel = (None if plot_err or not rows else
                os.path.relpath(os.path.abspath(args.plot), doc_dir))
    name = os.path.relpath(os.path.abspath(args.results), REPO)
    if name.startswith('..'):
        name = os.path.abspath(args.results)
    block = render_block(rows, name, plot_rel, plot_err)
    text = ''
    if os.path.isfile(args.doc):
        with open(args.doc) as f:
            text = f.read()
    new = update_doc(text, block)
    tmp = args.doc + '.tmp'
    with open(tmp, 'w') as f:
        f.write(new)
    os.replace(tmp, args.doc)


# -- main -----------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=parse_size, nargs='+',
                   default=list(DEFAULT_SIZES),
                   help='entities per KG (15000, 100k, 1M, ...)')
    p.add_argument('--epochs', type=int, default=DEFAULT_EPOCHS)
    p.add_argument('--run-dir', default=None,
                   help='checkpoints, pairs and logs (default: a new '
                   'folder under the temp dir)')
    p.add_argument('--threads', type=int, default=0,
                   help='torch/OpenMP threads of the children (default: '
                   "the library's choice)")
    p.add_argument('--timeout', type=float, default=None,
                   help='seconds per child (train, align, scoring)')
    p.add_argument('--one-to-one-max', type=parse_size, default=None,
                   help='run align --one-to-one only up to this size '
                   '(default: every size)')
    p.add_argument('--force', action='store_true',
                   help='rerun sizes already in the results')
    p.add_argument('--keep-going', action='store_true',
                   help='go on to the next size after a failure')
    p.add_argument('--dry-run', action='store_true',
                   help='print the commands and exit')
    p.add_argument('--render-only', action='store_true')
    p.add_argument('--results', default=os.path.join(HERE, 'results',
                                                     'scale.jsonl'))
    p.add_argument('--doc', default=os.path.join(DOCS, 'benchmarks.md'),
                   help='markdown file holding the scale markers')
    p.add_argument('--plot', default=None,
                   help='plot path (default: _static/scale.png next to '
                   '--doc)')
    p.add_argument('--score-pairs', default=None, help=argparse.SUPPRESS)
    p.add_argument('--spec', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.score_pairs:  # the scoring child
        print(json.dumps(score_pairs(args.score_pairs,
                                     json.loads(args.spec))))
        return
    if args.epochs < 1:
        p.error('--epochs must be >= 1')
    args.plot = args.plot or os.path.join(
        os.path.dirname(os.path.abspath(args.doc)), '_static', 'scale.png')
    results = read_rows(args.results)
    run_id = time.strftime('%Y%m%dT%H%M%S')
    todo = [n for n in dict.fromkeys(args.sizes)
            if args.force or row_key(n, args.epochs) not in results]
    if args.dry_run:
        out = args.run_dir or '<run-dir>'
        for n in args.sizes:
            state = 'to do' if n in todo else 'done '
            for c in commands(n, args.epochs, os.path.join(out, str(n)),
                              args.threads)['shown']:
                print(f'{state}  {c}')
        return
    if not args.render_only and todo:
        args.run_dir = args.run_dir or tempfile.mkdtemp(
            prefix=f'ricea_scale_{run_id}_')
        os.makedirs(args.run_dir, exist_ok=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.results)),
                    exist_ok=True)
        info, commit = machine_info(), git_commit()
        command = 'python benchmarks/scale.py ' + shlex.join(
            sys.argv[1:] if argv is None else argv)
        for n in todo:
            row = measure(n, args, run_id)
            row.update(key=row_key(n, args.epochs), commit=commit,
                       date=time.strftime('%Y-%m-%d'), machine=info,
                       command=command)
            results[row['key']] = row
            with open(args.results, 'a') as f:
                f.write(json.dumps(row) + '\n')
            print(f'[{short_size(n)}] {row["status"]}: '
                  f'{json.dumps(summary(row))}', flush=True)
            render(results, args)
            if row['status'] != 'ok' and not args.keep_going:
                print(f'stopping after the failure at {n} (--keep-going '
                      'goes on)', file=sys.stderr)
                break
    render(results, args)
    print(f'wrote {args.doc}')


def summary(row: Dict) -> Dict:
    keys = ('epoch_time_s', 'epoch_time_per_1k_pairs_s', 'train_wall_s',
            'train_peak_rss_gib', 'align_wall_s', 'align_peak_rss_gib',
            'end_to_end_s', 'align_1to1_wall_s')
    out = {k: round(row[k], 3) for k in keys if row.get(k) is not None}
    out['val'] = row.get('val')
    out['test_hits@1'] = _get(row, 'test', 'hits@1')
    out['pairs_test'] = {k: v for k, v in (row.get('pairs_test') or
                                           {}).items()
                         if k in ('precision', 'recall')}
    return out


if __name__ == '__main__':
    main()
