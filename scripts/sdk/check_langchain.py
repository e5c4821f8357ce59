"""LangChain's ChatOpenAI and OpenAIEmbeddings through the gateway (run by scripts/sdk-tests.sh with
SDK_EXTRA=1). Prints one line per feature and exits non-zero if any failed."""

import json
import os
import sys
import urllib.request

import openai
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

GATEWAY = os.environ["LQO_URL"] + "/v1"
UPSTREAM = os.environ["LQO_UPSTREAM_URL"]
KEY = "sk-client-side-key-not-used"
results = []


def check(name):
    def run(fn):
        try:
            fn()
            results.append((name, "ok", ""))
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            results.append((name, "FAIL", f"{type(e).__name__}: {e}"[:300]))
        return fn
    return run


def last_upstream_body():
    with urllib.request.urlopen(f"{UPSTREAM}/mock/requests") as r:
        return json.load(r)[-1]["body"]


class City(BaseModel):
    name: str
    population: int


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return "18 C"


llm = ChatOpenAI(model="gpt-test", base_url=GATEWAY, api_key=KEY)


@check("invoke")
def _():
    assert "Hello" in llm.invoke("Hello there").content


@check("stream")
def _():
    text = "".join(c.content for c in llm.stream("Stream to me"))
    assert "Stream to me" in text, text


@check("bind_tools")
def _():
    msg = llm.bind_tools([get_weather]).invoke("Weather in Lima?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "get_weather", msg


@check("bind_tools, streamed")
def _():
    chunks = list(llm.bind_tools([get_weather]).stream("Weather in Lima?"))
    whole = chunks[0]
    for c in chunks[1:]:
        whole = whole + c
    assert whole.tool_calls[0]["name"] == "get_weather", whole


@check("tool turn (ToolMessage)")
def _():
    bound = llm.bind_tools([get_weather])
    first = bound.invoke([HumanMessage("Weather in Lima?")])
    call = first.tool_calls[0]
    answer = bound.invoke([HumanMessage("Weather in Lima?"), first,
                           ToolMessage(content="18 C", tool_call_id=call["id"])])
    assert answer.content and not answer.tool_calls, answer
    assert last_upstream_body()["messages"][2]["tool_call_id"] == call["id"]


@check("with_structured_output (json_schema)")
def _():
    city = llm.with_structured_output(City).invoke("A big city")
    assert isinstance(city, City), city


@check("with_structured_output (function_calling)")
def _():
    city = llm.with_structured_output(City, method="function_calling").invoke("A big city")
    assert isinstance(city, City), city


@check("n=2, logprobs")
def _():
    r = ChatOpenAI(model="gpt-test", base_url=GATEWAY, api_key=KEY, n=2, logprobs=True, top_logprobs=2).generate([[HumanMessage("hi")]])
    gens = r.generations[0]
    assert len(gens) == 2, gens
    assert gens[0].message.response_metadata["logprobs"]["content"], gens[0]


@check("image part")
def _():
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    msg = HumanMessage(content=[{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": png}}])
    assert llm.invoke([msg]).content
    assert last_upstream_body()["messages"][0]["content"][1]["type"] == "image_url"


@check("Responses API (use_responses_api) via gpt-resp")
def _():
    resp = ChatOpenAI(model="gpt-resp", base_url=GATEWAY, api_key=KEY, use_responses_api=True)
    assert "Hi there" in resp.invoke("Hi there").text
    msg = resp.bind_tools([get_weather]).invoke("Weather in Lima?")
    assert msg.tool_calls[0]["name"] == "get_weather", msg


@check("Responses API (use_responses_api) via gpt-test, translated to Chat Completions")
def _():
    resp = ChatOpenAI(model="gpt-test", base_url=GATEWAY, api_key=KEY, use_responses_api=True)
    assert "Hi there" in resp.invoke("Hi there").text
    msg = resp.bind_tools([get_weather]).invoke("Weather in Lima?")
    assert msg.tool_calls[0]["name"] == "get_weather", msg
    city = resp.with_structured_output(City).invoke("A big city")
    assert isinstance(city, City), city


@check("upstream 400 → BadRequestError")
def _():
    try:
        llm.invoke("x [mock:status=400]")
    except openai.BadRequestError as e:
        assert e.code == "invalid_request"
        return
    raise AssertionError("no error")


@check("OpenAIEmbeddings")
def _():
    # check_embedding_ctx_length=False sends strings; the default tokenizes first, which needs
    # tiktoken's cl100k_base file from the internet (token arrays are covered by tests/passthrough.rs).
    emb = OpenAIEmbeddings(model="gpt-test", base_url=GATEWAY, api_key=KEY, dimensions=8,
                           check_embedding_ctx_length=False)
    vectors = emb.embed_documents(["first", "second"])
    assert len(vectors) == 2 and len(vectors[0]) == 8
    assert last_upstream_body()["input"] == ["first", "second"]


width = max(len(n) for n, _, _ in results)
print("\nLangChain (langchain-openai) through the gateway:")
for name, status, detail in results:
    print(f"  {name:<{width}}  {status}  {detail}")
sys.exit(0 if all(s == "ok" for _, s, _ in results) else 1)
