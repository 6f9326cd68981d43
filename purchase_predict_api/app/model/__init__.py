"""The model: where it comes from (``source``), how a directory is loaded and checked
(``loading``), its compiled form (``compiled``, LightGBM's C library through ``native``), the model
frame (``frame``) and the bake before ``docker build`` (``bake``)."""
