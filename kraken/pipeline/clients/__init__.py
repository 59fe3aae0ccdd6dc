"""Service clients: how a service's ``call`` step reaches the thing behind it.

A client is built per started service from its start config; ``call(prepared, call_config)``
returns a value or a Deferred of one. A client *returns* :class:`~.base.ClientError` for
failures that the service's ``error`` step may turn into a result; anything it raises is a
call error. ``base`` holds the client interface, ``registry`` finds a client by module name,
the other modules are the built-in clients.
"""
