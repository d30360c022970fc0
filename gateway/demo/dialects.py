"""How each simulated vendor speaks: usage shapes, where streamed usage goes, keep-alives, error bodies.

A dialect is plain data; `gateway.demo.vendor_app` is the one server that reads it. The shapes follow what
the vendors' OpenAI-compatible endpoints sent in 2024, because the gateway's metering has to cope with
exactly these differences:

| dialect    | usage fields                                  | streamed usage                               |
|------------|-----------------------------------------------|----------------------------------------------|
| volcengine | prompt_tokens_details.cached_tokens (always 0) | final `choices: []` chunk if include_usage  |
| dashscope  | prompt_tokens_details.cached_tokens (prefix cache) | final `choices: []` chunk if include_usage |
| qianfan    | plain                                         | final `choices: []` chunk if include_usage   |
| zhipu      | plain                                         | top-level `usage` on the finish chunk, always |
| deepseek   | prompt_cache_hit/miss_tokens (prefix cache)   | final `choices: []` chunk if include_usage; `: keep-alive` comments |
| hunyuan    | plain                                         | cumulative `usage` on every chunk, always    |
| moonshot   | plain                                         | `choices[0].usage` on the finish chunk, always |
| openai     | prompt_tokens_details.cached_tokens (prefix cache) | final `choices: []` chunk if include_usage |

Prompt caches (automatic, per upstream model; see `gateway.demo.prompt_cache` for the sources):

| dialect   | granularity      | minimum | TTL (since last use)                                   |
|-----------|------------------|---------|--------------------------------------------------------|
| deepseek  | 64-token blocks  | 64      | 1 h (DeepSeek: "a few hours to a few days")            |
| dashscope | 64-token blocks  | 256     | 10 min (Alibaba: "cleaned up after a period unused")   |
| openai    | 128-token steps  | 1,024   | 10 min (OpenAI: "5-10 minutes of inactivity")          |
| others    | none: Ark, Qianfan, GLM-3, Hunyuan and Moonshot had no automatic prefix cache in 2024 |
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.demo.prompt_cache import CachePolicy

UsageFields = Literal["plain", "openai_cached", "deepseek"]
StreamUsage = Literal["final_usage_chunk", "finish_chunk", "every_chunk", "choice_usage"]
ErrorKind = Literal["auth", "account", "model_not_found", "context", "bad_request", "rate_limit", "server",
                    "overloaded", "timeout"]


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    code: str | None
    type: str | None
    message: str  # str.format template: {model}, {account}, {limit}, {tokens}, {detail}


@dataclass(frozen=True)
class Dialect:
    name: str
    usage_fields: UsageFields = "plain"
    stream_usage: StreamUsage = "final_usage_chunk"
    keepalive: bool = False  # interleave `: keep-alive` comments and blank lines in streams
    cache: CachePolicy | None = None  # the vendor's automatic prompt cache; None = it caches nothing
    anthropic_path: str | None = None  # where it also serves the Anthropic Messages format (DeepSeek: /anthropic)
    error_style: Literal["openai", "zhipu"] = "openai"
    request_id_field: str | None = None  # top-level id some vendors add beside "error"
    echo_versioned_model: bool = False  # Ark answers `ep-20240515-doubao-pro-32k` as `doubao-pro-32k-240515`
    errors: dict[str, ErrorSpec] = field(default_factory=dict)


def _openai_errors(**overrides: ErrorSpec) -> dict[str, ErrorSpec]:
    base = {
        "auth": ErrorSpec(401, "invalid_api_key", "invalid_request_error",
                          "Incorrect API key provided for account {account}: invalid api key"),
        "account": ErrorSpec(401, "invalid_api_key", "invalid_request_error",
                             "account {account} is suspended: overdue balance, api key disabled"),
        "model_not_found": ErrorSpec(404, "model_not_found", "invalid_request_error",
                                     "The model `{model}` does not exist or you do not have access to it."),
        "context": ErrorSpec(400, "context_length_exceeded", "invalid_request_error",
                             "This model's maximum context length is {limit} tokens. However, you requested "
                             "{tokens} tokens. Please reduce the length of the messages or completion."),
        "bad_request": ErrorSpec(400, "invalid_request_error", "invalid_request_error", "{detail}"),
        "rate_limit": ErrorSpec(429, "rate_limit_exceeded", "requests",
                                "Rate limit reached for requests. Please try again later."),
        "server": ErrorSpec(500, "internal_error", "server_error",
                            "The server had an error while processing your request."),
        "overloaded": ErrorSpec(503, "server_overloaded", "server_error",
                                "The server is overloaded due to high traffic. Please retry later."),
        "timeout": ErrorSpec(504, "timeout", "server_error", "Upstream request timed out."),
    }
    base.update(overrides)
    return base


VOLCENGINE = Dialect(
    name="volcengine",
    usage_fields="openai_cached",
    echo_versioned_model=True,
    errors={
        "auth": ErrorSpec(401, "AuthenticationError", "Unauthorized",
                          "The API key in the request is missing or invalid for account {account}."),
        "account": ErrorSpec(403, "AccountOverdueError", "Forbidden",
                             "The request failed because account {account} has an overdue balance."),
        "model_not_found": ErrorSpec(404, "InvalidEndpointOrModel.NotFound", "NotFound",
                                     "The model or endpoint {model} does not exist or you do not have access to it."),
        "context": ErrorSpec(400, "InvalidParameter", "BadRequest",
                             "Total tokens of text exceed max message tokens {limit}: requested {tokens}."),
        "bad_request": ErrorSpec(400, "InvalidParameter", "BadRequest", "{detail}"),
        "rate_limit": ErrorSpec(429, "RateLimitExceeded.EndpointRPMExceeded", "TooManyRequests",
                                "The request rate of the endpoint has exceeded the RPM limit."),
        "server": ErrorSpec(500, "InternalServiceError", "InternalServerError",
                            "The service encountered an unexpected internal error."),
        "timeout": ErrorSpec(504, "RequestTimeout", "GatewayTimeout", "The request timed out."),
    },
)

DASHSCOPE = Dialect(
    name="dashscope",
    usage_fields="openai_cached",
    cache=CachePolicy(block_tokens=64, min_tokens=256, ttl_s=600),
    request_id_field="request_id",
    errors=_openai_errors(
        auth=ErrorSpec(401, "invalid_api_key", "invalid_request_error",
                       "Incorrect API key provided for account {account}."),
        context=ErrorSpec(400, "invalid_parameter_error", "invalid_request_error",
                          "Range of input length should be [1, {limit}], got {tokens}."),
        rate_limit=ErrorSpec(429, "Throttling.RateQuota", "requests", "Requests rate limit exceeded, please try again later."),
    ),
)

QIANFAN = Dialect(
    name="qianfan",
    request_id_field="id",
    errors=_openai_errors(
        auth=ErrorSpec(401, "invalid_iam_token", "invalid_request_error",
                       "IAM Certification failed: account {account} invalid api key"),
        rate_limit=ErrorSpec(429, "rpm_rate_limit_exceeded", "rate_limit_exceeded", "Open api qps request limit reached"),
    ),
)

ZHIPU = Dialect(
    name="zhipu",
    stream_usage="finish_chunk",
    error_style="zhipu",
    errors={
        "auth": ErrorSpec(401, "1000", None, "身份验证失败 (account {account}: invalid api key)"),
        "account": ErrorSpec(401, "1113", None, "您的账户已欠费，请充值后重试 (account {account})"),
        "model_not_found": ErrorSpec(404, "1211", None, "模型不存在，请检查模型代码。({model})"),
        "context": ErrorSpec(400, "1261", None, "Prompt 超长: {tokens} tokens, limit {limit}"),
        "bad_request": ErrorSpec(400, "1214", None, "{detail}"),
        "rate_limit": ErrorSpec(429, "1302", None, "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"),
        "server": ErrorSpec(500, "1234", None, "网络错误，请联系客服。"),
        "timeout": ErrorSpec(504, "1234", None, "网络错误：请求超时。"),
    },
)

DEEPSEEK = Dialect(
    name="deepseek",
    usage_fields="deepseek",
    keepalive=True,
    cache=CachePolicy(block_tokens=64, min_tokens=64, ttl_s=3600),
    anthropic_path="/anthropic",  # https://api.deepseek.com/anthropic (api-docs.deepseek.com/guides/anthropic_api)
    errors=_openai_errors(
        auth=ErrorSpec(401, "invalid_request_error", "authentication_error",
                       "Authentication Fails, account {account}: your api key is invalid"),
        account=ErrorSpec(402, "invalid_request_error", "unknown_error", "Insufficient Balance in account {account}"),
        context=ErrorSpec(400, "invalid_request_error", "invalid_request_error",
                          "This model's maximum context length is {limit} tokens. However, you requested "
                          "{tokens} tokens. Please reduce the length of the messages."),
        server=ErrorSpec(500, "internal_error", "server_error", "Server error: please retry your request."),
    ),
)

HUNYUAN = Dialect(name="hunyuan", stream_usage="every_chunk", errors=_openai_errors())

MOONSHOT = Dialect(
    name="moonshot",
    stream_usage="choice_usage",
    errors=_openai_errors(
        auth=ErrorSpec(401, None, "invalid_authentication_error", "Invalid Authentication for account {account}"),
        context=ErrorSpec(400, None, "invalid_request_error",
                          "Invalid request: Your request exceeded model token limit: {limit} (requested {tokens})"),
        rate_limit=ErrorSpec(429, None, "rate_limit_reached_error", "max RPM reached, please try again later"),
    ),
)

OPENAI = Dialect(name="openai", usage_fields="openai_cached",
                 cache=CachePolicy(block_tokens=128, min_tokens=1024, ttl_s=600), errors=_openai_errors())

DIALECTS: dict[str, Dialect] = {
    d.name: d for d in (VOLCENGINE, DASHSCOPE, QIANFAN, ZHIPU, DEEPSEEK, HUNYUAN, MOONSHOT, OPENAI)
}


def dialect_for(provider: str) -> Dialect:
    """The provider's own dialect; any other provider name speaks plain OpenAI."""
    return DIALECTS.get(provider, OPENAI)


def error_body(dialect: Dialect, kind: ErrorKind, request_id: str, **values: Any) -> tuple[int, dict[str, Any]]:
    spec = dialect.errors.get(kind) or OPENAI.errors[kind]
    fmt = {"model": "", "account": "", "limit": "", "tokens": "", "detail": ""} | values
    message = spec.message.format(**fmt)
    if dialect.error_style == "zhipu":
        err: dict[str, Any] = {"code": spec.code, "message": message}
    else:
        err = {"message": message, "type": spec.type, "param": None, "code": spec.code}
    body: dict[str, Any] = {"error": err}
    if dialect.request_id_field:
        body[dialect.request_id_field] = request_id
    return spec.status, body


def usage_body(dialect: Dialect, prompt: int, completion: int, cached: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if dialect.usage_fields == "openai_cached":
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
    elif dialect.usage_fields == "deepseek":
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt - cached
    return usage


_EP_RE = re.compile(r"^ep-(\d{2})(\d{6})-(.+)$")


def echoed_model(dialect: Dialect, model: str) -> str:
    """The `model` a response names: usually the one asked for; Ark names the model behind an endpoint id."""
    if dialect.echo_versioned_model and (m := _EP_RE.match(model)):
        return f"{m.group(3)}-{m.group(2)}"
    return model
