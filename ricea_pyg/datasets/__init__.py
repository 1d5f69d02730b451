from ricea_pyg.datasets.dbp15k import DBP15K, read_dbp15k_pair
from ricea_pyg.datasets.fbdb15k import (
    FBDB15K,
    read_fbdb15k_pair,
    read_openke_kg,
)
from ricea_pyg.datasets.openea import (
    OpenEA,
    TSVFolder,
    read_openea_pair,
    read_tsv_folder,
)
from ricea_pyg.datasets.registry import (
    dataset_fields,
    dataset_names,
    load_dataset,
    open_dataset,
    register_dataset,
)

__all__ = ['DBP15K', 'FBDB15K', 'OpenEA', 'TSVFolder', 'read_dbp15k_pair',
           'read_fbdb15k_pair', 'read_openke_kg', 'read_openea_pair',
           'read_tsv_folder', 'dataset_names', 'dataset_fields',
           'load_dataset', 'open_dataset', 'register_dataset']
