"""The procedural demo domain, one module per concern; :mod:`wagi.data.demo_faces` gathers the public
names (see its docstring for the pipeline and the seed convention)."""
