"""Edge files in, dataset directories out: readers, dictionaries, the importer, the dataset layout."""
