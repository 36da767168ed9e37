"""llmvariance: measure how much a model's output varies across identical requests.

    import llmvariance as lv
    req = lv.ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    result = await lv.sample_many(req, n=30, endpoint=lv.Endpoint(base_url=...))
    print(result.report)
"""

from . import (
    _conditions,  # noqa: F401  (registers the engine conditions)
    distributed,
    engines,
)
from ._analysis.accuracy import AccuracyComparison, Expected, McNemarRow, RerunAccuracy
from ._analysis.answers import JsonPointer
from ._analysis.collect import VarianceCollector, analyze
from ._analysis.compare import ArmSummary, Comparison, compare
from ._analysis.history import HistoryRow, RunHistory, run_history
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
from ._analysis.runcompare import (
    ModeChange,
    RunComparison,
    RunSide,
    SuiteRunComparison,
    compare_accuracy,
    compare_runs,
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
from ._check import CheckResult, CheckRow, check, check_sync
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
from ._matrix import MatrixResult, MatrixRow, merge_matrices, server_matrix
from ._progress import Progress
from ._render.html import html_report
from ._render.plot import (
    plot_conditions,
    plot_divergence,
    plot_entropy,
    plot_price,
    plot_report,
    plot_tree,
)
from ._request import (
    ChatMessage,
    ChatMessageParam,
    ChatRequest,
    CompletionRequest,
    InputMessage,
    InputMessageParam,
    Message,
    MessageParam,
    MessagesRequest,
    Request,
    ResponsesRequest,
    TextBlock,
    TextBlockParam,
)
from ._runs.expected import read_expected
from ._runs.merge import MergedRun, merge_runs, read_runs
from ._runs.runfile import RunContents, read_run
from ._runs.shard import Shard
from ._runs.suitefile import (
    SuiteFileError,
    SuiteRequest,
    SuiteRequests,
    read_request,
    read_suite,
    request_from_body,
)
from ._sample import Sample, SampleError, Usage
from ._sampler import SampleSet, sample_many, sample_many_sync
from ._stream import SampleStream, stream_samples
from ._suite import SuiteEntry, SuiteResult, sample_suite, sample_suite_sync
from ._version import __version__
from .distributed import RayRun, run_on_ray
from .engines.info import ServerInfo

__all__ = [
    "AccuracyComparison",
    "AiohttpTransport",
    "AnswerCount",
    "ArmSummary",
    "BatchEffectResult",
    "ChatMessage",
    "ChatMessageParam",
    "ChatRequest",
    "CheckResult",
    "CheckRow",
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
    "Expected",
    "FailureMessage",
    "HTTPRequest",
    "HTTPResponse",
    "HistogramBin",
    "HistoryRow",
    "Http1Transport",
    "HypothesisTestResult",
    "InputMessage",
    "InputMessageParam",
    "JsonPointer",
    "KeptSamples",
    "LLMVarianceError",
    "LatencyStats",
    "LogprobAgreement",
    "Look",
    "MalformedResponseError",
    "MatrixResult",
    "MatrixRow",
    "McNemarRow",
    "MergedRun",
    "Message",
    "MessageParam",
    "MessagesRequest",
    "MockTransport",
    "ModeChange",
    "OutputCount",
    "PoolStats",
    "Progress",
    "PromptAnswers",
    "PromptComparison",
    "PromptStats",
    "Proportion",
    "RateLimit",
    "RateLimiter",
    "RayRun",
    "Request",
    "RequestTimeout",
    "RerunAccuracy",
    "ResponseError",
    "ResponseTooLargeError",
    "ResponsesRequest",
    "RetryPolicy",
    "RunComparison",
    "RunContents",
    "RunHistory",
    "RunSide",
    "Sample",
    "SampleError",
    "SampleSet",
    "SampleStream",
    "SequentialTest",
    "ServerInfo",
    "Shard",
    "StreamError",
    "SuiteComparison",
    "SuiteEntry",
    "SuiteFileError",
    "SuiteReport",
    "SuiteRequest",
    "SuiteRequests",
    "SuiteResult",
    "SuiteRunComparison",
    "TextBlock",
    "TextBlockParam",
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
    "check",
    "check_sync",
    "compare",
    "compare_accuracy",
    "compare_runs",
    "compare_suites",
    "distributed",
    "divergence_tree",
    "engines",
    "html_report",
    "judge",
    "merge_matrices",
    "merge_runs",
    "plot_conditions",
    "plot_divergence",
    "plot_entropy",
    "plot_price",
    "plot_report",
    "plot_tree",
    "read_expected",
    "read_request",
    "read_run",
    "read_runs",
    "read_suite",
    "register_condition",
    "request_from_body",
    "run_history",
    "run_on_ray",
    "sample_many",
    "sample_many_sync",
    "sample_suite",
    "sample_suite_sync",
    "samples_needed",
    "server_matrix",
    "stream_samples",
]
