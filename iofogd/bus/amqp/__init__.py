"""A small AMQP 1.0 client, stdlib only: the ioFog router's protocol.

- :mod:`.types`: the type system codec (pure)
- :mod:`.frames`: frames, protocol headers, performatives (pure)
- :mod:`.message`: message sections (pure)
- :mod:`.protocol`: the client connection state machine, sans I/O
- :mod:`.client`: the blocking socket adapter (one I/O thread, TLS for amqps://)
"""
