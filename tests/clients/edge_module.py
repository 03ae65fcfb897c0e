"""An unmodified-style IoT Edge Python module for the container tests: it connects with
IoTHubModuleClient.create_from_edge_environment() (workload API, trust bundle, SAS signed by
the workload socket), then
- reports `started` with the desired properties it found;
- sends a reading on output `out` every 0.2 s, alternating 20 and 100 degrees;
- reports what arrives on its inputs (`lastInput`: input name and body, `inputCount`);
- reports every desired patch (`lastPatch`);
- answers direct method `echo` with 200 and `{"echo": payload, "module": IOTEDGE_MODULEID}`.
"""

import json
import os
import threading
import time

from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

client = IoTHubModuleClient.create_from_edge_environment()
client.connect()
lock = threading.Lock()
inputs = {"count": 0}


def on_message(message):
    with lock:
        inputs["count"] += 1
        count = inputs["count"]
    body = message.data.decode("utf-8") if isinstance(message.data, bytes) else message.data
    client.patch_twin_reported_properties(
        {"lastInput": {"input": message.input_name, "body": body}, "inputCount": count}
    )


def on_method(request):
    payload = {"echo": request.payload, "module": os.environ["IOTEDGE_MODULEID"]}
    client.send_method_response(MethodResponse.create_from_method_request(request, 200, payload))


def on_patch(patch):
    # `$version` comes with the patch; reported property names may not start with `$`.
    patch = {k: v for k, v in patch.items() if not k.startswith("$")}
    client.patch_twin_reported_properties({"lastPatch": patch})


client.on_message_received = on_message
client.on_method_request_received = on_method
client.on_twin_desired_properties_patch_received = on_patch

twin = client.get_twin()
client.patch_twin_reported_properties(
    {"started": True, "desiredAtStart": twin.get("desired", {}).get("greeting")}
)
print("connected as", os.environ["IOTEDGE_MODULEID"], flush=True)

n = 0
while True:
    n += 1
    temperature = 100 if n % 2 == 0 else 20
    message = Message(json.dumps({"machine": {"temperature": temperature}, "n": n}))
    message.content_type = "application/json"
    message.content_encoding = "utf-8"
    client.send_message_to_output(message, "out")
    time.sleep(0.2)
