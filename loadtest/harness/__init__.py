"""What the load benchmark and ``benchmarks/replace_latency.py`` share.

* ``bench``: :class:`~loadtest.harness.bench.Bench`, everything one run starts on the engine
  (a reuseport service, plain labelled containers) and its removal, set up by a typed
  :class:`~loadtest.harness.bench.BenchConfig`;
* ``cli``: :class:`~loadtest.harness.cli.ReuseportCli`, the reuseport CLI as a subprocess
  on an explicit state dir;
* ``signals``: SIGTERM as Ctrl-C, and the guard that holds both during a teardown;
* ``latency``: one death -> replacement-listening trial, timed from the kernel;
* ``replacement``: the replace-latency experiment (reuseport vs Docker's restart policy);
* ``results`` / ``jsonable``: the typed figures of every part and their JSON form.
"""
