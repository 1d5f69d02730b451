from ricea_pyg.datasets.dbp15k import DBP15K, read_dbp15k_pair
from ricea_pyg.datasets.fbdb15k import (
                                        FBDB15K,
                                        read_fbdb15k_pair,
                                        read_openke_kg,
)

__all__ = ['DBP15K', 'FBDB15K', 'read_dbp15k_pair', 'read_fbdb15k_pair',
           'read_openke_kg']
