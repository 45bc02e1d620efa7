"""What an operator's trust grants a concentrator's login (``headend.transport.trust``), over a real
listener, hub and dial-in link with the simulated concentrator: the first failing login in the window
claims it and is kept; it may be sent the meter archive (AFN 04 F10) and no other PW request; a later
login cannot claim a used grant, and an expired grant covers nothing: both are closed as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from headend.drivers.gdw1376_terminal import ArchivePoint, diff_archive, push_archive
from headend.transport import ChannelUnverified, DialinHub, open_channel
from headend.transport.concentrator_dialin import DialinConcentratorLink
from headend.transport.listener import Listener, ListenerSpec
from headend.transport.trust import Trust
from protocols.gdw1376 import unit
from simulators.concentrator import ConcentratorSpec, SimConcentrator
from tests.concentrator.support import ADDRESS
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)
DEVICE = ("gdw1376", ADDRESS)
PW = bytes(range(16))


def grant(minutes: float = 10, trust_id: int = 1) -> Trust:
    return Trust(trust_id, DEVICE, "1005", "replaced on site", datetime.now(UTC) + timedelta(minutes=minutes))


async def test_a_trusted_login_gets_its_archive_and_nothing_else() -> None:
    hub = DialinHub()
    listener = await Listener(ListenerSpec(port=0, kind="gdw1376", silent_timeout_s=30), hub).start()
    spec = ConcentratorSpec(port=listener.port, address=ADDRESS, meters=2, latency_ms=10, redial_s=0.2, pw=PW)
    sim = SimConcentrator(spec)
    points = [ArchivePoint(r.pn, r.port, r.address, 2007) for r in sim.pool.archive.values()]
    sim.pool.archive.clear()  # a replacement: its archive is empty
    link = open_channel(f"gdw1376://{ADDRESS}", hub)
    assert isinstance(link, DialinConcentratorLink)
    link.set_pw(PW)
    try:
        await link.open()
        hub.trusts.load([grant()])
        async with sim:
            await wait_until(lambda: hub.online(DEVICE), 20)
            first = hub.live[DEVICE]
            assert await link.verify(lambda: _false()) is None  # claimed, kept, not verified
            assert not first.closed and not first.verified and not link.verified
            assert hub.trusts.take_claims() == [(1, first.peer)]
            for afn, fn in ((0x04, 14), (0x05, 31), (0x10, 1)):  # other parameters, clock, forwarding
                with pytest.raises(ChannelUnverified, match="not verified: no PW sent"):
                    await link.request(afn, [unit(0, fn)])
            assert hub.counts["secret_refused_unverified"] == 3
            pushed = await push_archive(link, await diff_archive(link, points))
            assert pushed == 2 and sim.counts["afn_04"] == 1
            link.verify_again()
            assert await link.verify(lambda: _true()) is True and link.verified

            # the grant was used: the next login that fails its check is closed as before
            first.close("test")
            await wait_until(lambda: hub.online(DEVICE) and hub.live[DEVICE] is not first, 20)
            assert await link.verify(lambda: _false()) is False
            assert hub.counts["identity_mismatch"] == 1

            # a fresh grant that has expired covers nothing
            hub.trusts.load([grant(minutes=-1, trust_id=2)])
            await wait_until(lambda: hub.online(DEVICE), 20)
            assert await link.verify(lambda: _false()) is False
            assert hub.counts["identity_mismatch"] == 2 and hub.trusts.take_claims() == []
    finally:
        await link.close()
        await listener.stop()


async def _false() -> bool:
    return False


async def _true() -> bool:
    return True
