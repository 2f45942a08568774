"""What an employer administrator sees first: each certificate with its status and days left,
the applications with their progress, and the bound tax certificates."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ca_service.auth.access import ensure_role
from ca_service.auth.models import EMPLOYER_MEMBERS, User
from ca_service.binding.bindings import list_bindings
from ca_service.binding.models import CertificateBinding
from ca_service.config import Settings
from ca_service.db import utcnow
from ca_service.employers.models import Employer
from ca_service.employers.service import employer_of
from ca_service.issuance import renewal
from ca_service.issuance.models import Application, ApplicationStatus
from ca_service.issuance.service import applications_of

# The steps every application goes through, in order (dual control's second approval and a
# failed issuance retry stay on the step they belong to).
PROGRESS_STEPS: tuple[ApplicationStatus, ...] = (
    ApplicationStatus.DRAFT,
    ApplicationStatus.SUBMITTED,
    ApplicationStatus.APPROVED,
    ApplicationStatus.ISSUED,
)
_STEP_OF = {ApplicationStatus.AWAITING_CONFIRMATION: ApplicationStatus.SUBMITTED}


@dataclass(frozen=True)
class ApplicationProgress:
    """One application and how far along the steps it is."""

    application: Application
    reached: int  # index into PROGRESS_STEPS of the step the application is on

    @property
    def rejected(self) -> bool:
        return self.application.status is ApplicationStatus.REJECTED


@dataclass(frozen=True)
class Dashboard:
    employer: Employer
    certificates: list[renewal.RenewalWindow]
    applications: list[ApplicationProgress]
    bindings: list[CertificateBinding]

    @property
    def due(self) -> list[renewal.RenewalWindow]:
        """The certificates to renew now (inside the window or the grace period)."""
        return [window for window in self.certificates if window.renewable]


def progress_of(application: Application) -> ApplicationProgress:
    """Where ``application`` is on PROGRESS_STEPS (a rejected one stays on the step it left)."""
    status = application.status
    if status is ApplicationStatus.REJECTED:
        return ApplicationProgress(application, PROGRESS_STEPS.index(ApplicationStatus.SUBMITTED))
    return ApplicationProgress(application, PROGRESS_STEPS.index(_STEP_OF.get(status, status)))


def employer_dashboard(
    *, user: User, settings: Settings, now: dt.datetime | None = None
) -> Dashboard:
    """The dashboard of the user's employer at ``now``.

    :raises Forbidden: when the user is not an employer administrator.
    """
    ensure_role(user, *EMPLOYER_MEMBERS)
    now = now or utcnow()
    employer = employer_of(user)
    return Dashboard(
        employer=employer,
        certificates=[
            renewal.renewal_window(certificate, settings, now)
            for certificate in renewal.employer_certificates(user)
        ],
        applications=[progress_of(application) for application in applications_of(user)],
        bindings=list_bindings(employer.id),
    )
