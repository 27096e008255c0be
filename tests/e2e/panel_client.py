"""A line-by-line port of the standard PHP `Api` class that SMM panels copy.

It builds the body by hand (`name=urlencode(value)` joined with `&`), sends an
old browser User-Agent, follows redirects, ignores the HTTP status, and decodes
answers the way the PHP class does (objects vs arrays). If the gateway works for
this client unmodified, it works for panels.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USER_AGENT = "Mozilla/4.0 (compatible; MSIE 5.01; Windows NT 5.0)"


class Api:
    def __init__(self, api_url: str, api_key: str) -> None:
        self.api_url = api_url
        self.api_key = api_key

    def order(self, data: dict[str, Any]) -> Any:  # add order
        post = {"key": self.api_key, "action": "add", **data}
        return json.loads(self.connect(post))

    def status(self, order_id: int) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "status",
                                        "order": order_id}))

    def multi_status(self, order_ids: list[int]) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "status",
                                        "orders": ",".join(map(str, order_ids))}))

    def services(self) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "services"}))

    def refill(self, order_id: int) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "refill",
                                        "order": order_id}))

    def multi_refill(self, order_ids: list[int]) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "refill",
                                        "orders": ",".join(map(str, order_ids))}))

    def refill_status(self, refill_id: int) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "refill_status",
                                        "refill": refill_id}))

    def multi_refill_status(self, refill_ids: list[int]) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "refill_status",
                                        "refills": ",".join(map(str, refill_ids))}))

    def cancel(self, order_ids: list[int]) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "cancel",
                                        "orders": ",".join(map(str, order_ids))}))

    def balance(self) -> Any:
        return json.loads(self.connect({"key": self.api_key, "action": "balance"}))

    def connect(self, post: dict[str, Any]) -> str:
        # PHP: foreach ($post as $name => $value) $_post[] = $name.'='.urlencode($value);
        body = "&".join(f"{name}={urllib.parse.quote_plus(str(value))}"
                        for name, value in post.items())
        request = urllib.request.Request(
            self.api_url, data=body.encode(), method="POST",
            headers={"User-Agent": USER_AGENT,
                     "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as err:  # the PHP class never looks at the status
            return str(err.read().decode())
