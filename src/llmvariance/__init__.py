"""llmvariance: measure how much a model's output varies across identical requests.

    import llmvariance as lv
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    result = await lv.sample_many(req, n=30, endpoint=lv.Endpoint(base_url=...))
    print(result.report)
"""

from . import engines
from ._analysis.answers import JsonPointer
from ._analysis.collect import VarianceCollector, analyze
from ._analysis.compare import ArmSummary, Comparison, compare
from ._analysis.report import (
    ConfidenceInterval,
    DivergenceStats,
    FailureMessage,
    HistogramBin,
    LatencyStats,
    LogprobAgreement,
    OutputCount,
    Proportion,
    VarianceReport,
)
from ._analysis.sequential import EarlyStop, Look, SequentialTest
from ._analysis.stats import HypothesisTestResult, samples_needed
from ._analysis.suitecompare import PromptComparison, SuiteComparison, compare_suites
from ._analysis.suitereport import (
    AnswerCount,
    DistinctCount,
    PromptAnswers,
    PromptStats,
    SuiteReport,
    analyze_suite,
)
from ._analysis.tree import DivergenceTree, DivergenceTreeCollector, TreeNode, divergence_tree
from ._client.endpoint import Endpoint
from ._client.http1 import Http1Transport
from ._client.pool import ClientPool, PoolStats
from ._client.ratelimit import RateLimit, RateLimiter
from ._client.retry import RetryPolicy
from ._client.transport import (
    AiohttpTransport,
    HTTPRequest,
    HTTPResponse,
    MockTransport,
    Timeouts,
    Transport,
)
from ._errors import (
    ConfigError,
    ConnectError,
    EngineError,
    LLMVarianceError,
    MalformedResponseError,
    RequestTimeout,
    ResponseError,
    ResponseTooLargeError,
    StreamError,
    TransportError,
)
from ._experiment import (
    BatchEffectResult,
    Condition,
    Trial,
    background_load,
    batch_effect,
    judge,
    register_condition,
)
from ._kept import KeptSamples
from ._matrix import MatrixResult, MatrixRow, server_matrix
from ._progress import Progress
from ._render.html import html_report
from ._render.plot import (
    plot_conditions,
    plot_divergence,
    plot_entropy,
    plot_report,
    plot_tree,
)
from ._request import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    InputMessage,
    Message,
    MessagesRequest,
    ResponsesRequest,
    TextBlock,
)
from ._runs.runfile import RunContents, read_run
from ._runs.suitefile import (
    SuiteFileError,
    SuiteRequest,
    read_request,
    read_suite,
    request_from_body,
)
from ._sample import Sample, SampleError, Usage
from ._sampler import SampleSet, sample_many, sample_many_sync
from ._stream import SampleStream, stream_samples
from ._suite import SuiteEntry, SuiteResult, sample_suite, sample_suite_sync
from ._version import __version__

__all__ = [
    "AiohttpTransport",
    "AnswerCount",
    "ArmSummary",
    "BatchEffectResult",
    "ChatMessage",
    "ChatRequest",
    "ClientPool",
    "Comparison",
    "CompletionRequest",
    "Condition",
    "ConfidenceInterval",
    "ConfigError",
    "ConnectError",
    "DistinctCount",
    "DivergenceStats",
    "DivergenceTree",
    "DivergenceTreeCollector",
    "EarlyStop",
    "Endpoint",
    "EngineError",
    "FailureMessage",
    "HTTPRequest",
    "HTTPResponse",
    "HistogramBin",
    "Http1Transport",
    "HypothesisTestResult",
    "InputMessage",
    "JsonPointer",
    "KeptSamples",
    "LLMVarianceError",
    "LatencyStats",
    "LogprobAgreement",
    "Look",
    "MalformedResponseError",
    "MatrixResult",
    "MatrixRow",
    "Message",
    "MessagesRequest",
    "MockTransport",
    "OutputCount",
    "PoolStats",
    "Progress",
    "PromptAnswers",
    "PromptComparison",
    "PromptStats",
    "Proportion",
    "RateLimit",
    "RateLimiter",
    "RequestTimeout",
    "ResponseError",
    "ResponseTooLargeError",
    "ResponsesRequest",
    "RetryPolicy",
    "RunContents",
    "Sample",
    "SampleError",
    "SampleSet",
    "SampleStream",
    "SequentialTest",
    "StreamError",
    "SuiteComparison",
    "SuiteEntry",
    "SuiteFileError",
    "SuiteReport",
    "SuiteRequest",
    "SuiteResult",
    "TextBlock",
    "Timeouts",
    "Transport",
    "TransportError",
    "TreeNode",
    "Trial",
    "Usage",
    "VarianceCollector",
    "VarianceReport",
    "__version__",
    "analyze",
    "analyze_suite",
    "background_load",
    "batch_effect",
    "compare",
    "compare_suites",
    "divergence_tree",
    "engines",
    "html_report",
    "judge",
    "plot_conditions",
    "plot_divergence",
    "plot_entropy",
    "plot_report",
    "plot_tree",
    "read_request",
    "read_run",
    "read_suite",
    "register_condition",
    "request_from_body",
    "sample_many",
    "sample_many_sync",
    "sample_suite",
    "sample_suite_sync",
    "samples_needed",
    "server_matrix",
    "stream_samples",
]
