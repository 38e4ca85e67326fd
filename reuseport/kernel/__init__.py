"""Everything reuseport reads from (or writes to) the kernel about a service's port.

One place reads the port's sockets, one attributes them to replicas, one says what each
listener means for the service:

* :mod:`.netlink`: the NETLINK_SOCK_DIAG protocol (dumps of one port's TCP sockets).
* :mod:`.sockets`: the port's sockets: ``listening_inodes``, ``port_sockets``
  (listeners with accept queue and backlog, accepted connections), ``listeners`` (with
  their holder processes, from a scan of every fd table), ``pids_listening``.
* :mod:`.processes`: processes from ``/proc``: ``socket_fds``/``socket_inodes`` (the one
  fd scan), ``process_tree``, ``comm``, ``container_id_of``, ``all_pids``.
* :mod:`.attribution`: the one attributor (a socket belongs to a replica iff a process in
  the replica's process tree holds it): ``owners``, ``observe`` -> ``PortObservation``
  (``ReplicaSockets`` per replica, ``ForeignListener`` for the rest), ``listening_pids``.
* :mod:`.ports`: the pure classification of a listener for a service (``classify`` ->
  ``ListenerClass``: ours, other-uid, foreign-joinable, foreign-blocking, foreign), the
  uid rule (``UID_RULE``), and ``Owner``, the one description of a listener's holder.
* :mod:`.options`: whether a listener has SO_REUSEPORT (``has_reuseport``, ``joinable``).
* :mod:`.destroy`: ``close_listener`` (SOCK_DESTROY), for hung replicas.
* :mod:`.bpf`: the bpf(2) calls through ctypes, ``pidfd_getfd``, and a small assembler.
* :mod:`.steerprog`: the SK_REUSEPORT programs (round-robin, least-conn), one comment a line.
* :mod:`.steer`: ``Steering``: the program and maps of one port's reuseport group, whose
  members the supervisor sets (``sync``), adopted by a restarted supervisor (``handle``).

Import the modules (``from reuseport.kernel import sockets``); this package re-exports
nothing.
"""
