"""Docker Swarm as the engine (``engine = "swarm"``): the service is a Swarm service in the
host network, so its tasks share the port on each node with SO_REUSEPORT.

Swarm owns the count, the scheduling, restarts and rolling updates (start-first: a new
task listens beside the old one, which a published port would forbid); reuseport maps its
spec onto Swarm's (``params``), drives it through the Engine API (``engine``), proves
from the kernel what listens (``service``) and keeps a node agent on every node
(``agent``, watching what ``watch`` says) that reads its node's kernel, ends hung tasks
and reports through Swarm's logs. ``render`` is `ps`, ``doctor`` `doctor --engine swarm`,
``fileapply`` a project file's plan carried out by Swarm.
"""
