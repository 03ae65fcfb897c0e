"""Drive Verge with the unmodified Azure IoT device SDK for Python (azure-iot-device).

    python iothub_client.py device CONNECTION_STRING CA_FILE
    python iothub_client.py module CONNECTION_STRING CA_FILE
    python iothub_client.py token CONNECTION_STRING TTL_SECONDS   # a SAS token, computed here

Prints one JSON object per line for each thing that happened, so that the Rust test asserts on
them; runs until stdin reaches end of file (the test closes it) or 60 s pass.

device: sends one telemetry message (with a property and a content type), gets the twin, patches
reported properties, answers any direct method and prints desired-property patches.
module: everything of device, plus prints every message on any input and sends each one back on
output "echo"; sends one message on output "out" at start.
"""

import json
import sys
import threading

from azure.iot.device import IoTHubDeviceClient, IoTHubModuleClient, Message, MethodResponse


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def token(connection_string, ttl):
    """A SAS token as the SDKs make it, independently of Verge's code."""
    import base64, hashlib, hmac, time
    from urllib.parse import quote

    parts = dict(p.split("=", 1) for p in connection_string.split(";"))
    resource = f"{parts['HostName']}/devices/{quote(parts['DeviceId'], safe='')}"
    if "ModuleId" in parts:
        resource += f"/modules/{quote(parts['ModuleId'], safe='')}"
    sr = quote(resource, safe="")
    se = int(time.time()) + int(ttl)
    key = base64.b64decode(parts["SharedAccessKey"])
    sig = base64.b64encode(hmac.new(key, f"{sr}\n{se}".encode(), hashlib.sha256).digest())
    return f"SharedAccessSignature sr={sr}&sig={quote(sig.decode(), safe='')}&se={se}"


def main():
    if sys.argv[1] == "token":
        print(token(sys.argv[2], sys.argv[3]))
        return
    kind, connection_string, ca_file = sys.argv[1:4]
    with open(ca_file) as f:
        ca = f.read()
    cls = IoTHubDeviceClient if kind == "device" else IoTHubModuleClient
    client = cls.create_from_connection_string(
        connection_string, server_verification_cert=ca, connection_retry=False
    )

    def on_method(request):
        emit("method", name=request.name, payload=request.payload)
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"echo": request.payload})
        )

    def on_desired(patch):
        emit("desired", patch=patch)

    def on_message(message):
        emit(
            "input",
            input=message.input_name,
            data=message.data.decode("utf-8", "replace"),
            properties=message.custom_properties,
        )
        if kind == "module":
            echo = Message(message.data, content_encoding="utf-8", content_type="application/json")
            echo.custom_properties["echoed"] = "yes"
            client.send_message_to_output(echo, "echo")

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_desired
    if kind == "module":
        client.on_message_received = on_message
    client.connect()
    emit("connected")

    twin = client.get_twin()
    emit("twin", twin=twin)
    client.patch_twin_reported_properties({"sdk": "azure-iot-device", "kind": kind})
    emit("reported")

    msg = Message('{"machine":{"temperature":99.5},"from":"sdk"}')
    msg.content_type = "application/json"
    msg.content_encoding = "utf-8"
    msg.custom_properties["origin"] = "python-sdk"
    if kind == "device":
        client.send_message(msg)
    else:
        client.send_message_to_output(msg, "out")
    emit("sent")

    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(60)
    client.shutdown()
    emit("closed")


if __name__ == "__main__":
    main()
