"""What every model and tokenizer load in the workflow's code passes: the configured
trust_remote_code (never a literal True), and never a token (only the environment or a login supply
one). Read from the source with ast, so a new load cannot slip past."""

import ast

from conftest import REPO


def model_loading_calls():
    """Every `X.from_pretrained(...)` call in the workflow's code, with where it is."""
    for path in sorted((REPO / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
            ):
                yield path.relative_to(REPO), node


def test_every_model_or_tokenizer_load_passes_the_configured_trust_remote_code():
    calls = list(model_loading_calls())
    assert len(calls) >= 6
    for path, call in calls:
        receiver = ast.unparse(call.func.value)
        if receiver == "PeftModel":  # loads adapter weights only, never code
            continue
        keywords = {k.arg: k.value for k in call.keywords}
        where = f"{path}:{call.lineno} {receiver}.from_pretrained"
        assert "trust_remote_code" in keywords, where
        assert not (
            isinstance(keywords["trust_remote_code"], ast.Constant) and keywords["trust_remote_code"].value is True
        ), where


def test_no_call_passes_a_token_so_only_the_environment_or_login_supply_one():
    for path in sorted((REPO / "scripts").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                passed = {k.arg for k in node.keywords}
                assert not passed & {"token", "use_auth_token", "hub_token"}, f"{path}:{node.lineno}"
