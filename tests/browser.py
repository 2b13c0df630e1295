"""Drives Debian's headless Chromium over the DevTools protocol for the
dashboard tests: one JSON command per line on stdin, one JSON answer per
line on stdout. Commands: goto URL, eval EXPR, shot PATH, quit."""
import base64, json, os, subprocess, sys, tempfile, time, urllib.request

import websocket

profile = tempfile.mkdtemp(prefix="flotilla-chromium-")
browser = subprocess.Popen(
    [os.environ.get("CHROMIUM", "chromium"), "--headless=new", "--no-sandbox", "--disable-gpu",
     "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-port=0",
     "--window-size=1280,900", f"--user-data-dir={profile}", "about:blank"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.time() + 60
port_file = os.path.join(profile, "DevToolsActivePort")
while not os.path.exists(port_file) or not open(port_file).read().strip():
    if time.time() > deadline or browser.poll() is not None:
        print(json.dumps({"error": "chromium did not start"}), flush=True)
        sys.exit(1)
    time.sleep(0.1)
port = open(port_file).read().split()[0]
pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
page = next(p for p in pages if p["type"] == "page")
socket = websocket.create_connection(page["webSocketDebuggerUrl"], suppress_origin=True, timeout=60)
next_id = 0


def call(method, **params):
    global next_id
    next_id += 1
    socket.send(json.dumps({"id": next_id, "method": method, "params": params}))
    while True:
        message = json.loads(socket.recv())
        if message.get("id") == next_id:
            if "error" in message:
                raise RuntimeError(message["error"])
            return message["result"]


def evaluate(expression):
    result = call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in result:
        raise RuntimeError(result["exceptionDetails"].get("text", "exception"))
    return result["result"].get("value")


def settle():
    end = time.time() + 30
    while time.time() < end:
        try:
            if evaluate("document.readyState") == "complete":
                return
        except RuntimeError:
            pass
        time.sleep(0.05)


print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    try:
        if command["op"] == "goto":
            call("Page.navigate", url=command["url"])
            time.sleep(0.1)
            settle()
            answer = {"ok": True}
        elif command["op"] == "eval":
            answer = {"value": evaluate(command["expr"])}
        elif command["op"] == "settle":
            time.sleep(0.2)
            settle()
            answer = {"ok": True}
        elif command["op"] == "shot":
            data = call("Page.captureScreenshot", format="png")["data"]
            with open(command["path"], "wb") as out:
                out.write(base64.b64decode(data))
            answer = {"ok": True}
        else:
            break
    except Exception as error:  # the test reads the error
        answer = {"error": str(error)}
    print(json.dumps(answer), flush=True)
browser.kill()
browser.wait()
