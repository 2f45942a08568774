"""The administrator's page of HR operators (list, create, remove) and the invitation link an
operator opens to choose a password."""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from werkzeug.wrappers import Response

from ca_service.auth.access import require_role
from ca_service.auth.forms import SetPasswordForm
from ca_service.auth.models import Role, User
from ca_service.employers import operators
from ca_service.employers.forms import OperatorForm, RemoveOperatorForm
from ca_service.errors import AuthenticationFailed, Conflict, ValidationError
from ca_service.extensions import settings_of

bp = Blueprint("operators", __name__, url_prefix="/employers")

Page = Response | str | tuple[str, int]


def _admin() -> User:
    user: User = current_user._get_current_object()
    return user


def _index_page(form: OperatorForm, status: int = 200) -> tuple[str, int]:
    rows = operators.list_operators(admin=_admin())
    page = render_template(
        "employers/operators.html",
        form=form,
        remove=RemoveOperatorForm(),
        rows=rows,
        limit=operators.MAX_OPERATORS,
    )
    return page, status


@bp.get("/operators")
@require_role(Role.EMPLOYER_ADMIN)
def index() -> Page:
    return _index_page(OperatorForm(formdata=None))


def _invitation_link(user_id: int, secret: str) -> str:
    base = settings_of(current_app).public_base_url
    return base + url_for("operators.accept_invitation", user_id=user_id, secret=secret)


@bp.post("/operators")
@require_role(Role.EMPLOYER_ADMIN)
def create() -> Page:
    form = OperatorForm()
    if not form.validate_on_submit():
        return _index_page(form, 400)
    data = operators.NewOperator(
        full_name=form.full_name.data or "",
        email=form.email.data or "",
        mobile=form.mobile.data or "",
    )
    try:
        operator = operators.create_operator(
            admin=_admin(),
            data=data,
            invitation_link=_invitation_link,
            invitation_hours=int(settings_of(current_app)["ONE_TIME_PASSWORD_HOURS"]),
        )
    except (ValidationError, Conflict) as exc:
        flash(exc.message, "error")
        return _index_page(form, exc.status_code)
    flash(
        _(
            "%(name)s can now act for your company as %(username)s: an invitation to choose a "
            "password is on its way to %(email)s.",
            name=operator.full_name,
            username=operator.username,
            email=operator.email,
        ),
        "success",
    )
    return redirect(url_for("operators.index"))


@bp.post("/operators/<int:operator_id>/remove")
@require_role(Role.EMPLOYER_ADMIN)
def remove(operator_id: int) -> Page:
    if not RemoveOperatorForm().validate_on_submit():
        flash(_("The form expired; try again."), "error")
        return _index_page(OperatorForm(formdata=None), 400)
    operator = operators.remove_operator(admin=_admin(), operator_id=operator_id)
    flash(
        _(
            "%(name)s (%(username)s) is removed and was signed out everywhere.",
            name=operator.full_name,
            username=operator.username,
        ),
        "success",
    )
    return redirect(url_for("operators.index"))


def _private(page: str, status: int) -> Response:
    response = make_response(page, status)
    # The path carries the link's secret: never in a Referer header or a shared cache.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/invitation/<int:user_id>/<secret>", methods=["GET", "POST"])
def accept_invitation(user_id: int, secret: str) -> Response:
    form = SetPasswordForm()
    try:
        operator = operators.invited_operator(user_id=user_id, secret=secret)
    except AuthenticationFailed as exc:
        flash(exc.message, "error")
        return _private(render_template("employers/invitation.html", form=None), 404)
    status = 200
    if form.validate_on_submit():
        try:
            operators.accept_invitation(
                user_id=user_id, secret=secret, new_password=form.password.data or ""
            )
        except ValidationError as exc:
            flash(exc.message, "error")
            status = exc.status_code
        else:
            # Whoever was signed in in this browser is not the operator who just set a password.
            logout_user()
            session.clear()
            flash(
                _("Your password is set. Sign in with it and the code sent to you by SMS."),
                "success",
            )
            return redirect(url_for("auth.login"))
    elif form.is_submitted():
        status = 400
    page = render_template("employers/invitation.html", form=form, operator=operator)
    return _private(page, status)
