"""The web interface of ``latentfarm serve``: the REST API (``api_*`` routes, ``schemas``, ``deps``), the dashboard
(``dashboard`` routes, ``views``, ``charts``, ``templates/``, ``static/``, sign-in in ``login``), what every request
passes first (``guard``: host names, origin, token; security headers), the bounded parsing of submitted specs
(``spec_parser``, ``spec_worker``), the app that holds them (``app``) and the server (``server``). It sits on the
control plane and imports no other interface."""
