import llmvariance as lv


def test_all_is_sorted_and_every_name_exists() -> None:
    assert lv.__all__ == sorted(lv.__all__)
    missing = [name for name in lv.__all__ if not hasattr(lv, name)]
    assert missing == []


def test_design_public_names_are_exported() -> None:
    required = {"sample_many", "sample_many_sync", "analyze", "ChatRequest",
                "CompletionRequest", "Endpoint", "Sample", "SampleSet", "VarianceReport"}
    assert required <= set(lv.__all__)


def test_private_modules_do_not_leak_into_namespace() -> None:
    public = {name for name in dir(lv) if not name.startswith("_")}
    assert public - set(lv.__all__) <= {"providers", "testing"}
