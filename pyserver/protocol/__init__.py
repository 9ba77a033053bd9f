"""Protocol translation (v1, later v2) between wire messages and the server API. No sockets."""
