"""Authentication: SMS login, sessions, device enrolment, and the role policy per RPC."""
