"""SIP for direct PUBLISH (issue 5): pure message, digest, transaction and publication cores
(``message``, ``digest``, ``transaction``, ``publication``), and the Twisted shell
(``client``, ``transport``, ``monitor``)."""
