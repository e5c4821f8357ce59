"""The official openai Python SDK against a real `lqo serve` in front of `lqo mock-upstream`.

Run by scripts/sdk-tests.sh, which starts both and sets LQO_URL, LQO_UPSTREAM_URL and LQO_DB.
Every call sends its own x-request-id; at the end each one must be in the database exactly once,
and the upstream must have seen exactly the calls the gateway made (no SDK retries on top).
"""

import base64
import json
import os
import sqlite3
import struct
import time
import unittest
import urllib.request
import uuid

import openai
from pydantic import BaseModel

GATEWAY = os.environ["LQO_URL"]
UPSTREAM = os.environ["LQO_UPSTREAM_URL"]
DB = os.environ["LQO_DB"]

client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="sk-client-side-key-not-used")
SENT: list[str] = []

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
PNG_1X1 = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
    "hQGAhKmMIQAAAABJRU5ErkJggg=="
)


def rid() -> dict:
    """A fresh x-request-id, remembered for the database check."""
    r = str(uuid.uuid4())
    SENT.append(r)
    return {"x-request-id": r}


def get_json(url: str):
    with urllib.request.urlopen(url) as r:
        return json.load(r)


def upstream_requests() -> int:
    return get_json(f"{UPSTREAM}/mock/stats")["requests"]


def last_upstream_body() -> dict:
    return get_json(f"{UPSTREAM}/mock/requests")[-1]["body"]


class City(BaseModel):
    name: str
    country: str
    population: int


class ChatCompletions(unittest.TestCase):
    def test_tools_plain_then_the_tool_turn(self):
        messages = [{"role": "user", "content": "What is the weather in Lima?"}]
        r = client.chat.completions.create(
            model="gpt-test", messages=messages, tools=[WEATHER], extra_headers=rid()
        )
        choice = r.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        call = choice.message.tool_calls[0]
        self.assertEqual(call.function.name, "get_weather")
        args = json.loads(call.function.arguments)
        self.assertIn(args["unit"], ("celsius", "fahrenheit"))
        self.assertEqual(last_upstream_body()["tools"], [WEATHER])
        # The tool turn: the assistant's tool_calls and the tool's tool_call_id go up as sent.
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 18}'})
        r = client.chat.completions.create(
            model="gpt-test", messages=messages, tools=[WEATHER], extra_headers=rid()
        )
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertTrue(r.choices[0].message.content)
        sent = last_upstream_body()["messages"]
        self.assertEqual(sent[1]["tool_calls"][0]["id"], call.id)
        self.assertEqual(sent[2]["tool_call_id"], call.id)

    def test_tools_streamed(self):
        stream = client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "Weather in Lima?"}],
            tools=[WEATHER],
            stream=True,
            extra_headers=rid(),
        )
        name, args, finish = "", "", None
        for chunk in stream:
            for c in chunk.choices:
                for t in c.delta.tool_calls or []:
                    name += t.function.name or ""
                    args += t.function.arguments or ""
                finish = c.finish_reason or finish
        self.assertEqual(name, "get_weather")
        self.assertEqual(finish, "tool_calls")
        self.assertIn("city", json.loads(args))
        # The stream helper assembles the same call.
        with client.chat.completions.stream(
            model="gpt-test",
            messages=[{"role": "user", "content": "Weather in Lima?"}],
            tools=[WEATHER],
            extra_headers=rid(),
        ) as s:
            final = s.get_final_completion()
        self.assertEqual(final.choices[0].message.tool_calls[0].function.name, "get_weather")

    def test_parse_with_a_pydantic_model(self):
        for model in ("gpt-test", "gpt-resp", "mock-local"):
            r = client.chat.completions.parse(
                model=model,
                messages=[{"role": "user", "content": "A big city, please"}],
                response_format=City,
                extra_headers=rid(),
            )
            city = r.choices[0].message.parsed
            self.assertIsInstance(city, City, model)
            self.assertIsInstance(city.population, int)
        sent = last_upstream_body()
        self.assertEqual(sent["text"]["format"]["type"], "json_schema", "gpt-resp got it translated")

    def test_n_2_with_logprobs(self):
        r = client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "Say hello"}],
            n=2,
            logprobs=True,
            top_logprobs=3,
            seed=7,
            extra_headers=rid(),
        )
        self.assertEqual(len(r.choices), 2)
        self.assertNotEqual(r.choices[0].message.content, r.choices[1].message.content)
        top = r.choices[1].logprobs.content[0].top_logprobs
        self.assertEqual(len(top), 3)
        self.assertEqual(r.system_fingerprint, "fp_lqo_mock")
        self.assertEqual(last_upstream_body()["seed"], 7)

    def test_an_image_part(self):
        content = [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": PNG_1X1, "detail": "low"}},
        ]
        r = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": content}], extra_headers=rid()
        )
        self.assertTrue(r.choices[0].message.content)
        self.assertEqual(last_upstream_body()["messages"][0]["content"], content)

    def test_upstream_400_is_a_bad_request_error_sent_once(self):
        before = upstream_requests()
        with self.assertRaises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "too long [mock:status=400]"}],
                extra_headers=rid(),
            )
        self.assertEqual(e.exception.status_code, 400)
        self.assertEqual(e.exception.code, "invalid_request")
        self.assertEqual(upstream_requests() - before, 1)

    def test_upstream_429_is_a_rate_limit_error_without_sdk_retries(self):
        before = upstream_requests()
        with self.assertRaises(openai.RateLimitError) as e:
            client.chat.completions.create(
                model="gpt-test",
                messages=[{"role": "user", "content": "busy [mock:status=429]"}],
                extra_headers=rid(),
            )
        self.assertEqual(e.exception.code, "rate_limit_exceeded")
        self.assertEqual(e.exception.response.headers["x-should-retry"], "false")
        # The gateway's one attempt and two retries; the SDK (max_retries=2) added none.
        self.assertEqual(upstream_requests() - before, 3)


class Responses(unittest.TestCase):
    def test_create_plain_and_streamed(self):
        r = client.responses.create(
            model="gpt-resp", input="Tell me about Lima", instructions="Be brief.", extra_headers=rid()
        )
        self.assertIn("Tell me about Lima", r.output_text)
        self.assertEqual(last_upstream_body()["instructions"], "Be brief.")
        kinds = []
        text = ""
        for event in client.responses.create(
            model="gpt-resp", input="Stream about Lima", stream=True, extra_headers=rid()
        ):
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        self.assertEqual(kinds[0], "response.created")
        self.assertEqual(kinds[-1], "response.completed")
        self.assertIn("Stream about Lima", text)

    def test_function_calls_and_the_mock(self):
        tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"], "strict": True}
        r = client.responses.create(model="gpt-resp", input="Weather?", tools=[tool], extra_headers=rid())
        call = r.output[0]
        self.assertEqual((call.type, call.name), ("function_call", "get_weather"))
        with client.responses.stream(model="gpt-resp", input="Weather?", tools=[tool], extra_headers=rid()) as s:
            final = s.get_final_response()
        self.assertEqual(final.output[0].type, "function_call")
        r = client.responses.create(model="mock-local", input="hi", extra_headers=rid())
        self.assertTrue(r.output_text)


    def test_a_chat_completions_provider_is_translated(self):
        tool = {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"], "strict": True}
        r = client.responses.create(model="gpt-test", input="Tell me about Lima", instructions="Be brief.", extra_headers=rid())
        self.assertIn("Tell me about Lima", r.output_text)
        self.assertEqual(last_upstream_body()["messages"][0], {"role": "system", "content": "Be brief."})
        # The SDK's stream helper rebuilds the response from the translated events.
        with client.responses.stream(model="gpt-test", input="Stream about Lima", extra_headers=rid()) as s:
            deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
            final = s.get_final_response()
        self.assertEqual(final.output_text, deltas)
        with client.responses.stream(model="gpt-test", input="Weather?", tools=[tool], extra_headers=rid()) as s:
            final = s.get_final_response()
        call = final.output[0]
        self.assertEqual((call.type, call.name), ("function_call", "get_weather"))
        self.assertIn("city", json.loads(call.arguments))
        # The tool's result goes back as a tool message with its call id.
        r = client.responses.create(
            model="gpt-test",
            tools=[tool],
            input=[
                {"role": "user", "content": "Weather?"},
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "18 C"},
            ],
            extra_headers=rid(),
        )
        self.assertTrue(r.output_text)
        self.assertEqual(last_upstream_body()["messages"][-1]["tool_call_id"], call.call_id)
        r = client.responses.parse(model="gpt-test", input="A big city", text_format=City, extra_headers=rid())
        self.assertIsInstance(r.output_parsed, City)
        # Refused before any model call (so not a record): what Chat Completions cannot keep.
        with self.assertRaises(openai.BadRequestError) as e:
            client.responses.create(model="gpt-test", input="hi", previous_response_id="resp_1")
        self.assertEqual(e.exception.param, "previous_response_id")


class Embeddings(unittest.TestCase):
    def test_create_base64_by_default_and_floats(self):
        # The SDK asks for base64 by default and decodes it.
        r = client.embeddings.create(model="gpt-test", input=["a", "b"], dimensions=8, extra_headers=rid())
        self.assertEqual(len(r.data), 2)
        self.assertEqual(len(r.data[0].embedding), 8)
        self.assertEqual(last_upstream_body()["encoding_format"], "base64")
        self.assertGreater(r.usage.prompt_tokens, 0)
        r2 = client.embeddings.create(
            model="gpt-test", input="a", dimensions=8, encoding_format="float", extra_headers=rid()
        )
        self.assertEqual(r2.data[0].embedding, r.data[0].embedding)


class Models(unittest.TestCase):
    def test_retrieve_a_version_and_an_alias(self):
        self.assertEqual(client.models.retrieve("gpt-test").id, "gpt-test")
        self.assertEqual(client.models.retrieve("gpt-4o").owned_by, "chat")
        with self.assertRaises(openai.NotFoundError):
            client.models.retrieve("gpt-9000")
        ids = [m.id for m in client.models.list()]
        self.assertIn("mock-local", ids)


def tearDownModule():
    """Each call is in the database exactly once."""
    deadline = time.time() + 15
    while True:
        with sqlite3.connect(DB) as db:
            counts = dict(db.execute(
                "SELECT client_request_id, count(*) FROM llm_logs GROUP BY client_request_id"))
        missing = [r for r in SENT if r not in counts]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.1)
    assert not missing, f"calls without a record: {missing}"
    twice = {r: n for r, n in counts.items() if r in SENT and n != 1}
    assert not twice, f"calls recorded more than once: {twice}"
    print(f"database: {len(SENT)} calls, each recorded exactly once")


if __name__ == "__main__":
    unittest.main(verbosity=2)
