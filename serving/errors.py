"""OpenAI-style error responses: `{"error": {"message", "type", "param", "code"}}`, vLLM's type names.

Every way a request can be refused goes through APIError, so one bad request gets one clear answer
and nothing else is disturbed.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.protocol import ErrorInfo, ErrorResponse

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "MethodNotAllowedError",
          500: "InternalServerError", 503: "ServiceUnavailableError"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def error_body(status: int, message: str, param: str | None = None) -> dict[str, object]:
    info = ErrorInfo(message=message, type=_TYPES.get(status, "APIError"), param=param, code=status)
    return ErrorResponse(error=info).model_dump()


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """One line naming the first bad field (FastAPI's own 422 lists pydantic internals)."""
    errors = exc.errors()
    if not errors:
        return "the request body is not valid", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'malformed')})", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Union types report one error per alternative; the field name and the first message suffice.
    field = next((p for p in loc if not p[:1].isdigit() and p[0].islower()), None) if loc else None
    where = ".".join(p for p in loc if not p.startswith(("function-", "list[", "str", "int", "float", "bool")))
    message = str(first.get("msg", "invalid value"))
    if not loc:
        return f"the request body is not valid: {message}", None
    return f"invalid value for '{where or field}': {message}", field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return error_response(400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
