"""latentfarm's control plane, without TensorFlow: at its root, what the farm does (``spec`` and ``plan``, the job
``lifecycle``, the ``broker``, the ``reaper``, the ``supervisor`` of worker processes, ``settings``, ``errors``, the
Celery app, the ``embedded`` worker, the ``control`` plane the interfaces use, ``filters`` for queries); in
``cli/`` and ``web/``, its interfaces, which sit on it and do not import each other (the CLI only starts the web
server)."""
