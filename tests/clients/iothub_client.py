"""Drive Verge with the unmodified Azure IoT device SDK for Python (azure-iot-device).

    python iothub_client.py device CONNECTION_STRING CA_FILE
    python iothub_client.py module CONNECTION_STRING CA_FILE
    python iothub_client.py token CONNECTION_STRING TTL_SECONDS   # a SAS token, computed here
    python iothub_client.py paho CONNECTION_STRING CA_FILE        # bare paho-mqtt: twin GET, telemetry
    python iothub_client.py invoke CONNECTION_STRING CA_FILE DEVICE MODULE METHOD PAYLOAD_JSON

Prints one JSON object per line for each thing that happened, so that the Rust test asserts on
them; runs until stdin reaches end of file (the test closes it) or 60 s pass.

device: sends one telemetry message (with a property and a content type), gets the twin, patches
reported properties, answers any direct method, prints desired-property patches and
cloud-to-device messages.
module: everything of device, plus prints every message on any input and sends each one back on
output "echo"; sends one message on output "out" at start.
invoke: as the module of CONNECTION_STRING, invokes METHOD on DEVICE's MODULE ("-" for the device
itself) over HTTPS (the hub's port 443) with `invoke_method`, prints {"event": "invoked",
"result": ...} or {"event": "failed", "error": ...} and exits. The SDK allows `invoke_method` only
on clients made by `create_from_edge_environment`; outside a container that reads the connection
string and CA from EdgeHubConnectionString and EdgeModuleCACertificateFile (the SDK's local
debugging variables), which is what this does.
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


def invoke(connection_string, ca_file, device, module, method, payload):
    import os

    for name in [n for n in os.environ if n.startswith("IOTEDGE_")]:
        del os.environ[name]
    os.environ["EdgeHubConnectionString"] = connection_string
    os.environ["EdgeModuleCACertificateFile"] = ca_file
    client = IoTHubModuleClient.create_from_edge_environment(connection_retry=False)
    params = {
        "methodName": method,
        "payload": json.loads(payload),
        "responseTimeoutInSeconds": 10,
        "connectTimeoutInSeconds": 0,
    }
    try:
        result = client.invoke_method(params, device, None if module == "-" else module)
        emit("invoked", result=result)
    except Exception as e:  # the test asserts on the HTTP status in the message
        causes = []
        while e is not None:
            causes.append(f"{type(e).__name__}: {e}")
            e = e.__cause__
        emit("failed", error=" <- ".join(causes))
    finally:
        client.shutdown()


def paho_device(connection_string, ca_file):
    """A bare paho-mqtt client in IoT Hub's dialect: twin GET over TLS, then telemetry QoS 1."""
    import paho.mqtt.client as paho

    parts = dict(p.split("=", 1) for p in connection_string.split(";"))
    device, gateway = parts["DeviceId"], parts["GatewayHostName"]
    got = threading.Event()
    client = paho.Client(client_id=device, protocol=paho.MQTTv311)
    client.username_pw_set(f"{parts['HostName']}/{device}/?api-version=2021-04-12", token(connection_string, 600))
    client.tls_set(ca_certs=ca_file)

    def on_message(_client, _userdata, message):
        emit("message", topic=message.topic, payload=message.payload.decode("utf-8", "replace"))
        got.set()

    client.on_message = on_message
    client.connect(gateway, 8883)
    client.loop_start()
    client.subscribe("$iothub/twin/res/#", qos=0)
    client.publish("$iothub/twin/GET/?$rid=42", b"", qos=0)
    got.wait(10)
    info = client.publish(f"devices/{device}/messages/events/via=paho", b'{"paho":true}', qos=1)
    info.wait_for_publish(10)
    emit("published", acked=info.is_published())
    client.disconnect()
    client.loop_stop()


def main():
    if sys.argv[1] == "paho":
        paho_device(sys.argv[2], sys.argv[3])
        return
    if sys.argv[1] == "token":
        print(token(sys.argv[2], sys.argv[3]))
        return
    if sys.argv[1] == "invoke":
        invoke(*sys.argv[2:8])
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

    def on_c2d(message):
        emit(
            "c2d",
            data=message.data.decode("utf-8", "replace"),
            properties=message.custom_properties,
            message_id=message.message_id,
        )

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_desired
    client.on_message_received = on_message if kind == "module" else on_c2d
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
