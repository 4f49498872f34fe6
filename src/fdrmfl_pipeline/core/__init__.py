"""The plain core: numpy/pyarrow/torch code with no Kedro or Flower imports."""
