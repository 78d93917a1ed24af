"""The operators' console: logins and roles, the audit, and the web pages over the same
operations as ippctl."""
