"""The parameter-campaign pages and their JSON endpoints: progress of the time-of-use campaigns that
``headend params campaign`` creates and the daemon runs, read-only, for every signed-in role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from headend.web import campaigns
from headend.web.campaign_schemas import CampaignOut, CampaignsOut
from headend.web.deps import Reader, Signed

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api")
Page = Annotated[int, Query(ge=1, le=100000, description="The page of 100 meters to show.")]
Json = dict[str, object]


@pages.get("/campaigns")
async def campaigns_page(request: Request, me: Signed, conn: Reader) -> Response:
    return me.console.page(request, "campaigns.html", me.who, await campaigns.campaigns(conn))


@pages.get("/campaigns/{name}")
async def campaign_page(request: Request, name: str, me: Signed, conn: Reader, page: Page = 1) -> Response:
    found = await campaigns.campaign(conn, name, page)
    return me.console.page(request, "campaign.html", me.who, found)


@api.get("/campaigns", response_model=CampaignsOut)
async def campaigns_json(signed: Signed, conn: Reader) -> Json:
    """Every time-of-use campaign, newest first: set, state, creator and approver, and its meters
    counted by state with the share settled (verified, skipped or failed)."""
    return await campaigns.campaigns(conn)


@api.get("/campaigns/{name}", response_model=CampaignOut)
async def campaign_json(name: str, signed: Signed, conn: Reader, page: Page = 1) -> Json:
    """One campaign's progress and a page of its meters (state, attempts, reason, last attempt),
    failed ones first."""
    return await campaigns.campaign(conn, name, page)
