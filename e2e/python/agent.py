"""An agent written with requests (Debian's python3-requests), unchanged:
configured only by the base URL and the key its launcher exported.
e2e/agents_python_test.go runs one scenario per process and reads the one
JSON line it prints.

    python3 agent.py basic    Stripe-style: the key as the Basic auth user
    python3 agent.py query    Gemini-style: the key as the ?key= parameter
"""
import json
import os
import sys

import requests


def basic():
    base, key = os.environ["STRIPE_BASE_URL"], os.environ["STRIPE_API_KEY"]
    return requests.get(base + "/v1/customers", params={"limit": 3}, auth=(key, ""), timeout=30)


def query():
    base, key = os.environ["GEMINI_BASE_URL"], os.environ["GEMINI_API_KEY"]
    return requests.post(base + "/v1beta/models/gemini-2.5-flash:generateContent", params={"key": key},
                         json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=30)


scenarios = {"basic": basic, "query": query}
if len(sys.argv) != 2 or sys.argv[1] not in scenarios:
    sys.exit("usage: agent.py " + "|".join(scenarios))
resp = scenarios[sys.argv[1]]()
print(json.dumps({"status": resp.status_code, "body": resp.json(), "requests": requests.__version__}))
