"""gRPC server interceptors, one concern each: access log, error mapping, authentication."""

from healthcode.server.interceptors.access_log import AccessLogInterceptor
from healthcode.server.interceptors.auth import Authenticator, AuthInterceptor
from healthcode.server.interceptors.errors import ErrorInterceptor

__all__ = ["AccessLogInterceptor", "AuthInterceptor", "Authenticator", "ErrorInterceptor"]
