"""The dashboard link protocol (docs/protocol.md), in three modules:

- :mod:`onthefly.protocol.spec`: the protocol as data: version, transport,
  error codes, methods, notifications, the handshake's fields, and the
  fingerprint docs/protocol.md carries;
- :mod:`onthefly.protocol.codec`: messages as lines of JSON: encode, decode,
  and the checks of params, results and payloads against the spec;
- :mod:`onthefly.protocol.payloads`: the one function that gives each
  record its wire shape (an epoch summary, a test result, a checkpoint).

Import names from the module that holds them; this package re-exports none.
"""
