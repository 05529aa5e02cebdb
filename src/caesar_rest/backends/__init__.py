"""Job backends: where and how job processes run."""
