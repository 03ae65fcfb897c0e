//! IoT Hub's MQTT dialect, as IoT Edge's hub speaks it (reference: `iotedge.md` §4).
