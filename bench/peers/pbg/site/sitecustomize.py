"""Put on the PYTHONPATH of PyTorch-BigGraph's importer by bench/pbg.py (small_chunks: scale_bench's P=16 part).

PBG's edge importer writes each HDF5 dataset in chunks of 50 MiB (BufferedDataset.BUFFER_SIZE),
and HDF5 allocates whole chunks: every bucket file takes ~157 MB on disk however few edges it
holds, 40 GB for the 256 buckets of P=16 on a 2M-edge graph. In the importer process only, this
makes the chunk 512 KiB. The files hold the same datasets with the same values; training reads
them with the same code.
"""

import sys

if sys.argv and sys.argv[0].endswith(("import_batched.py", "torchbiggraph_import_from_tsv")):
    import torchbiggraph.graph_storages

    torchbiggraph.graph_storages.BufferedDataset.BUFFER_SIZE = 1 << 16
