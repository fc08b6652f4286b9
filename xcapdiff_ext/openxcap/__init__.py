"""The OpenXCAP side: the storage wrapper, the ``XCAPDiff`` backend and its loaders."""
