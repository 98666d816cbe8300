"""The model description: search spaces, architectures, the layers they are made of, and the
networks built from them (a standalone network, or the supernet of a search).

- `space.py`           search spaces as data: the backbone's stages, candidates, presets
- `architecture.py`    architectures as data: one op token per searchable block (`arch.json`)
- `layers.py`          the one description of a network's layers: shapes, module, cost and
                       latency-table key (`Layer`, `walk`)
- `ops.py`             candidate ops (MBConv, zero) and the fixed layers
- `network.py`         a standalone network built from an architecture alone
- `initialization.py`  the weights every network starts from (the authors' he_fout)
- `supernet.py`        the binarized supernet: mixed ops with binary gates, α
- `shared_weights.py`  weight entanglement: a block's candidates as slices of one kernel
- `batchnorm.py`       a supernet's BatchNorm statistics, kept out of validation batches
"""
