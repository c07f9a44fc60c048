"""The web interface of ``latentfarm serve``: the REST API (``api_*`` routes, ``schemas``, ``deps``), the dashboard
(``dashboard`` routes, ``views``, ``charts``, ``templates/``, ``static/``), the app that holds both (``app``) and the
server (``server``). It sits on the control plane and imports no other interface."""
