"""Delivery backends of the outbox, chosen by configuration."""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlsplit

from ca_service.config import Settings
from ca_service.outbox.models import Channel, OutboxMessage


class DeliveryFailed(Exception):
    """A temporary delivery failure: the message is retried later."""


class Sender(Protocol):
    #: Whether the message actually left the service (sensitive bodies are then blanked).
    external: bool

    def send(self, message: OutboxMessage) -> None:
        """Deliver or raise DeliveryFailed."""


class OutboxOnly:
    """Development backend: the outbox row is the delivery; `ca-service outbox list` reads it."""

    external = False

    def send(self, message: OutboxMessage) -> None:
        return None


@dataclass
class SmtpSender:
    host: str
    port: int
    implicit_tls: bool
    mail_from: str
    username: str
    password: str | None
    external: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSender:
        url = urlsplit(str(settings["SMTP_URL"]))
        implicit_tls = url.scheme == "smtps"
        username = str(settings["SMTP_USERNAME"])
        return cls(
            host=url.hostname or "localhost",
            port=url.port or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            mail_from=str(settings["MAIL_FROM"]),
            username=username,
            password=os.environ.get(str(settings["SMTP_PASSWORD_ENV"])) if username else None,
        )

    def send(self, message: OutboxMessage) -> None:
        email = EmailMessage()
        email["From"] = self.mail_from
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email["Message-ID"] = f"<outbox-{message.id}-{message.dedupe_key[:40]}@ca-service>"
        email.set_content(message.body)
        context = ssl.create_default_context()
        try:
            if self.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=30, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=30)
            with smtp:
                if not self.implicit_tls and smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(email)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc


def senders_for(settings: Settings) -> dict[Channel, Sender]:
    """The configured backend per channel."""
    email: Sender = SmtpSender.from_settings(settings) if settings["SMTP_URL"] else OutboxOnly()
    # SMS_BACKEND has one value today ('outbox', validated in config); a gateway backend is a
    # class with send() added here.
    return {Channel.EMAIL: email, Channel.SMS: OutboxOnly()}
