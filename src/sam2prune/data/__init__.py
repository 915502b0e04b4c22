"""Video readers, dataset readers and palette PNG I/O."""
