"""The operator's console at /console, in a real headless chromium (Debian's
chromium and chromium-driver, which `make browser` installs), over a kernel
with real access control, storage on SeaweedFS and its HTTP door: an agent's
file delete is parked for a person, the operator signs in with the admin
token, sees it among the pending confirmations, approves it, and the delete
finishes. An agent's token is refused at sign-in, and the JSON API behind
the page refuses anyone but an administrator. `aios top --once` shows the
same parked call.

AIOS_CONSOLE_SCREENSHOT=docs/img/console.png saves the console, with the
parked call on it, for the docs.

The servers share the test's event loop, so the blocking WebDriver and CLI
run in threads.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from aios.access.v1 import access_service_pb2 as apb
from aios.access.v1 import access_service_pb2_grpc as apb_grpc
from aios.kernel.v1 import kernel_service_pb2 as kpb
from aios.kernel.v1 import syscall_pb2 as ks
from aios.sdk import AsyncClient, NotFoundError
from services.cli.main import main
from services.local.seaweed import start_seaweed
from services.runtime import trust
from tests.conftest import kernel_config
from tests.support.polling import until

WAIT = 30  # seconds any one thing may take in the browser


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory, llm_core_addr, start_service):
    from services.access.app import build as access_build
    from services.access.config import Config as AccessConfig
    from services.scheduler.app import build as kernel_build
    from services.storage.app import build as storage_build
    from services.storage.config import Config as StorageConfig

    data = tmp_path_factory.mktemp("console")
    tokens_file = data / "service-tokens.json"
    trust.ensure_tokens_file(tokens_file)
    env = {"AIOS_SERVICE_TOKENS_FILE": str(tokens_file), "AIOS_DATA_DIR": str(data)}
    access = await start_service(access_build, AccessConfig.from_env(env))
    s3 = start_seaweed(data / "s3")
    storage = await start_service(storage_build, StorageConfig.from_env({
        **env, "AIOS_STORAGE_S3_ENDPOINT": s3.endpoint, "AIOS_STORAGE_S3_ACCESS_KEY": s3.access_key,
        "AIOS_STORAGE_S3_SECRET_KEY": s3.secret_key, "AIOS_STORAGE_QDRANT_PATH": str(data / "index"),
        "AIOS_LLM_ADDR": llm_core_addr}))
    access_addr = f"127.0.0.1:{access.port}"
    kernel = await start_service(kernel_build, kernel_config(
        llm_core_addr, auth="access", auth_cache_seconds=0, http_port=0, AIOS_ACCESS_ADDR=access_addr,
        AIOS_STORAGE_ADDR=f"127.0.0.1:{storage.port}", AIOS_SERVICE_TOKENS_FILE=str(tokens_file)))
    admin_token = (data / "admin.token").read_text().strip()
    import grpc

    channel = grpc.aio.insecure_channel(access_addr)
    admin = apb_grpc.AccessServiceStub(channel)

    async def create(name: str) -> str:
        reply = await admin.CreateAgent(apb.CreateAgentRequest(name=name, groups=["agents"]),
                                        metadata=[("authorization", f"Bearer {admin_token}")])
        return reply.token

    yield {"kernel": f"127.0.0.1:{kernel.port}", "access": access_addr,
           "console": f"http://127.0.0.1:{kernel.service.http_port}/console", "admin_token": admin_token, "create": create}
    await channel.close()
    s3.stop(graceful=False)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    assert driver_path and chromium, "chromium and chromedriver are missing: `make browser` installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    # The tab may still be signed in (the page keeps the token in sessionStorage).
    shown = WebDriverWait(driver, WAIT).until(ec.any_of(
        ec.visibility_of_element_located((By.ID, "token")), ec.visibility_of_element_located((By.ID, "sign-out"))))
    if shown.get_attribute("id") == "sign-out":
        shown.click()
    field = WebDriverWait(driver, WAIT).until(ec.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.ID, "sign-in").click()


async def test_the_api_behind_the_page_is_for_administrators_only(stack):
    agent_token = await stack["create"]("nosy")
    api = stack["console"] + "/api/state"
    async with aiohttp.ClientSession() as http:
        page = await http.get(stack["console"])
        assert page.status == 200 and "script-src 'nonce-" in page.headers["Content-Security-Policy"]
        for headers, status in (({}, 401), ({"Authorization": "Bearer aios_not_a_token"}, 401),
                                ({"Authorization": f"Bearer {agent_token}"}, 403)):
            resp = await http.get(api, headers=headers)
            assert resp.status == status, await resp.text()
        for path, body in (("/api/policy", {"kind": "fifo"}), ("/api/confirmations/x", {"approve": True})):
            resp = await http.post(stack["console"] + path, json=body,
                                   headers={"Authorization": f"Bearer {agent_token}"})
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "admin_only"
        resp = await http.get(api, headers={"Authorization": f"Bearer {stack['admin_token']}"})
        state = await resp.json()
    assert resp.status == 200 and state["auth"] == "access" and state["confirmations"] == []
    assert "access-control-allow-origin" not in {k.lower() for k in resp.headers}


async def test_an_operator_approves_a_parked_delete_in_the_browser(stack, browser, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    token, other = await stack["create"]("dora"), await stack["create"]("eli")
    async with AsyncClient(stack["kernel"], token=token, timeout=60, retries=0) as dora, \
            AsyncClient(stack["kernel"], token=other, timeout=60, retries=0) as eli:
        # Something in the process table and the queues besides the delete.
        await asyncio.gather(dora.tools.call("calculator", {"expression": "6*7"}),
                             dora.llm.chat("Say hi.", max_tokens=8, temperature=0),
                             eli.llm.chat("Name a colour.", max_tokens=12, temperature=0))
        await dora.files.write("notes/plan.txt", "the plan")  # a new file: nothing to confirm
        delete = asyncio.create_task(dora.files.delete("notes/plan.txt"))

        async def parked():
            page = await dora.list_syscalls(state=ks.SYSCALL_STATE_AWAITING_CONFIRMATION)
            return [s for s in page.syscalls if s.confirmation_id]
        (call,) = await until(parked, "the delete is parked for a person", timeout=30)
        confirmation = call.confirmation_id

        # An agent's token is refused at sign-in.
        def refused() -> str:
            sign_in(browser, stack["console"], token)
            error = browser.find_element(By.ID, "login-error")
            WebDriverWait(browser, WAIT).until(lambda d: error.text)
            return error.text
        assert "administrator" in await asyncio.to_thread(refused)

        # The admin sees the parked delete arrive, and approves it.
        row = f'#confirmations tr[data-id="{confirmation}"]'

        def approve() -> None:
            sign_in(browser, stack["console"], stack["admin_token"])
            WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.ID, "console")))
            tr = WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.CSS_SELECTOR, row)))
            assert "dora" in tr.text and "notes/plan.txt" in tr.text
            # The rest of the page has come with the same poll.
            WebDriverWait(browser, WAIT).until(
                lambda d: "dora" in d.find_element(By.ID, "agents").text
                and "storage" in d.find_element(By.ID, "queues").text)
            if os.environ.get("AIOS_CONSOLE_SCREENSHOT"):
                shot = Path(os.environ["AIOS_CONSOLE_SCREENSHOT"])
                shot.parent.mkdir(parents=True, exist_ok=True)
                assert browser.save_screenshot(str(shot))
            tr.find_element(By.CSS_SELECTOR, "button.approve").click()
            WebDriverWait(browser, WAIT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        assert not delete.done()
        # `aios top` shows the same call waiting, with the admin's credential.
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["top", "--once", "--kernel", stack["kernel"], "--access-addr",
                                              stack["access"], "--token", stack["admin_token"]])
        out = capsys.readouterr().out
        assert code == 0 and any(line.startswith(confirmation) and "dora" in line for line in out.splitlines()), out

        await asyncio.to_thread(approve)
        assert await asyncio.wait_for(delete, WAIT) == 1
        with pytest.raises(NotFoundError):
            await dora.files.stat("notes/plan.txt")

        # ... and the page shows the delete finished.
        def finished() -> None:
            WebDriverWait(browser, WAIT).until(lambda d: any(
                call.id in tr.text and "succeeded" in tr.text
                for tr in d.find_elements(By.CSS_SELECTOR, "#syscalls tr")))
        await asyncio.to_thread(finished)


async def test_the_policy_switch_takes_effect_at_once(stack, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def switch() -> None:
        sign_in(browser, stack["console"], stack["admin_token"])
        WebDriverWait(browser, WAIT).until(ec.visibility_of_element_located((By.ID, "console")))
        select = browser.find_element(By.ID, "policy-select")
        WebDriverWait(browser, WAIT).until(lambda d: select.get_attribute("data-current"))
        Select(select).select_by_value("fair_share")
        browser.find_element(By.ID, "policy-apply").click()
        WebDriverWait(browser, WAIT).until(lambda d: select.get_attribute("data-current") == "fair_share")
    await asyncio.to_thread(switch)
    async with AsyncClient(stack["kernel"], token=stack["admin_token"], timeout=30) as admin:
        assert (await admin.get_policy()).kind == kpb.POLICY_KIND_FAIR_SHARE
        await admin.set_policy("fifo")


async def test_a_deny_through_the_api_refuses_the_parked_call(stack):
    from aios.sdk import PermissionDeniedError

    token = await stack["create"]("fred")
    admin = {"Authorization": f"Bearer {stack['admin_token']}"}
    async with AsyncClient(stack["kernel"], token=token, timeout=60, retries=0) as fred, \
            aiohttp.ClientSession() as http:
        await fred.files.write("keep.txt", "kept")
        delete = asyncio.create_task(fred.files.delete("keep.txt"))

        async def pending():
            state = await (await http.get(stack["console"] + "/api/state", headers=admin)).json()
            return [c for c in state["confirmations"] if c["agent"] == "fred"]
        (conf,) = await until(pending, "fred's delete is among the pending confirmations", timeout=30)
        resp = await http.post(f"{stack['console']}/api/confirmations/{conf['id']}", json={"approve": False},
                               headers=admin)
        assert resp.status == 200 and (await resp.json())["state"] == "denied"
        with pytest.raises(PermissionDeniedError) as exc:
            await asyncio.wait_for(delete, WAIT)
        assert exc.value.reason == "CONFIRMATION_DENIED"
        assert await fred.files.read("keep.txt") == b"kept"
        assert not await pending()
