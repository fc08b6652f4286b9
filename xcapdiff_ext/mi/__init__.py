"""Publishing through OpenSIPS's management interface (MI): pua_mi's ``pua_publish``.

``mi.codec`` is the pure part (requests to bytes, reply bytes to a result or a typed
error); the Twisted transports live beside it.  Import the submodules explicitly: this
package module stays empty so that importing the pure codec never pulls in the shell.
"""
