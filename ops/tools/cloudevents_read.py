"""Reads an Agora event stream as an outside consumer would: nats-py for
JetStream, and the CloudEvents SDK's binary-mode decoder for the headers.
Nothing of Agora's own code is used.

    cloudevents_read.py NATS_URL STREAM SUBJECT COUNT

Prints one JSON line per message: the NATS headers as received, and the
CloudEvent the SDK made of them (its attributes, with `time` as the SDK
parsed it, and its data). Exits non-zero if the SDK refuses a message or
fewer than COUNT arrive within 30 s.
"""

import asyncio
import json
import sys

import nats
from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


async def main(url: str, stream: str, subject: str, count: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        # An ephemeral pull consumer from the start of the stream, as a
        # newcomer reading the whole history would make.
        sub = await js.pull_subscribe(subject, stream=stream)
        received = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise SystemExit(f"only {len(received)} of {count} messages arrived")
            try:
                batch = await sub.fetch(count - len(received), timeout=2)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                await msg.ack()
                received.append(msg)
        for msg in received:
            headers = dict(msg.headers or {})
            event = from_binary(
                HTTPMessage(headers=headers, body=msg.data), JSONFormat(), CloudEvent
            )
            attributes = event.get_attributes()
            attributes["time"] = event.get_time().isoformat()
            print(
                json.dumps(
                    {
                        "subject": msg.subject,
                        "headers": headers,
                        "attributes": attributes,
                        "data": event.get_data(),
                    }
                )
            )
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
