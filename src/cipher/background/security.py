"""Who background work runs as: the zope.security side of the unit of work.

The rule: work never runs with more rights than the person who asked.

* The caller's principal is captured from its interaction.  An
  interaction whose participations name several principals is refused:
  background work runs as one user, never as a mix.
* In the runner the principal id is looked up again through the
  IAuthentication utility the site reaches, and an interaction is begun
  with it.  An unknown id is PrincipalNotFound, never a run.
* Work with no user on a site that reaches an authentication utility is
  refused (PrincipalRequired): it would run with every permission.  To run
  unchecked on purpose, name :data:`SYSTEM` as the user.
* Where the work's site reaches no authentication utility (a plain ZODB
  application, or the stub sites of 2.0's tests), there is nobody to
  check: work runs as cipher.background 2.0 ran it, in an interaction
  with no participation, and the user name goes into the transaction
  history only.  Work for a named user with *no site at all* and no
  global authentication utility is refused (PrincipalNotFound): nothing
  says where that user lives, and running it unchecked would give it
  every permission.
* A ``getPrincipal()`` override that answers None for a named user on a
  site that checks security is PrincipalNotFound too, never a run.
"""
from zope.authentication.interfaces import IAuthentication
from zope.authentication.interfaces import PrincipalLookupError
from zope.component import getSiteManager
from zope.component.hooks import getSite
from zope.interface import implementer
from zope.interface.interfaces import ComponentLookupError
from zope.security.interfaces import IParticipation
from zope.security.management import endInteraction
from zope.security.management import newInteraction
from zope.security.management import queryInteraction
from zope.security.management import restoreInteraction
from zope.security.management import system_user

from cipher.background.errors import ArgumentTypeError
from cipher.background.errors import ConfigurationError
from cipher.background.errors import PrincipalNotFound
from cipher.background.errors import PrincipalRequired

#: The principal id that runs work unchecked, on purpose: zope.security's
#: system user, for whom every permission check passes.  Pass it as the
#: user (``forSite(site, SYSTEM)``, ``submit(fn, user=SYSTEM)``,
#: ``--user system`` on the command line) for maintenance work that must
#: not be limited by any user's rights.
SYSTEM = system_user.id


@implementer(IParticipation)
class Participation:
    """The participation of ``principal`` in a background interaction."""

    interaction = None

    def __init__(self, principal):
        self.principal = principal


def interaction_active():
    """True when this thread has a security interaction."""
    return queryInteraction() is not None


def current_principal_id():
    """The id of the principal of the current interaction, or None.

    ConfigurationError when its participations name several principals:
    carrying one of them over could give the work more rights than the
    caller had, so the caller must name the user.
    """
    interaction = queryInteraction()
    if interaction is None:
        return None
    ids = []
    for participation in interaction.participations:
        principal = participation.principal
        if principal is not None and principal.id not in ids:
            ids.append(principal.id)
    if len(ids) > 1:
        raise ConfigurationError(
            'the current interaction has participations of several '
            'principals (%s); background work runs as one user: name it '
            "(user_name='...' for workers, user='...' for jobs)"
            % ', '.join(map(repr, ids)))
    return ids[0] if ids else None


def authentication_utility(site=None):
    """The IAuthentication utility reachable from ``site`` (default: the
    current site, else the global registry), or None.

    None too for a site whose ``getSiteManager()`` returns None (the stub
    sites of cipher.background 2.0's tests).
    """
    try:
        if site is None:
            manager = getSiteManager()
        else:
            manager = site.getSiteManager()
    except (ComponentLookupError, AttributeError):
        return None
    if manager is None:
        return None
    return manager.queryUtility(IAuthentication)


def _unnamed_user_message(auth):
    return ('no user is named for this background work, and the site '
            'checks security (it reaches the authentication utility %r): '
            'without a user the work would run with every permission. Name '
            "the user (user_name='editor' for workers, user='editor' for "
            'jobs, --user on the command line), or pass '
            'cipher.background.SYSTEM to run unchecked on purpose' % (auth,))


def check_principal_id(principal_id):
    """ArgumentTypeError unless ``principal_id`` is a str or None;
    ConfigurationError for the empty string."""
    if principal_id is not None and not isinstance(principal_id, str):
        raise ArgumentTypeError(
            'the user must be a principal id (a str), SYSTEM, or None for '
            'the current user, not %r' % (principal_id,))
    if principal_id == '':
        raise ConfigurationError(
            "the user must be a principal id, not ''; name the user, pass "
            'SYSTEM, or None for the current user')


def _homeless_user_message(principal_id):
    return ('cannot look up the user %r: the work has no site and no '
            'authentication utility is registered globally, so it would '
            'run with every permission; pass site= (the site whose users '
            'it is), or SYSTEM to run unchecked on purpose' % (
                principal_id,))


def check_user_for_site(user, site):
    """In the caller: PrincipalRequired when ``user`` is None and ``site``
    reaches an authentication utility; PrincipalNotFound when a named
    user has no site to be looked up in (see the module's rule)."""
    check_principal_id(user)
    if user is None:
        auth = authentication_utility(site)
        if auth is not None:
            raise PrincipalRequired(_unnamed_user_message(auth))
    elif user != SYSTEM and site is None and authentication_utility() is None:
        raise PrincipalNotFound(_homeless_user_message(user))


def lookup_principal(principal_id):
    """In the runner, with the site set: the principal the work runs as.

    :data:`SYSTEM` is zope.security's system user.  Otherwise the id is
    looked up through the reachable IAuthentication utility; None (an
    interaction with no participation) only where no such utility exists.
    PrincipalNotFound for an unknown id, PrincipalRequired for None where
    a utility exists.
    """
    if principal_id == SYSTEM:
        return system_user
    auth = authentication_utility()
    if auth is None:
        if principal_id is not None and getSite() is None:
            raise PrincipalNotFound(_homeless_user_message(principal_id))
        return None
    if principal_id is None:
        raise PrincipalRequired(_unnamed_user_message(auth))
    try:
        return auth.getPrincipal(principal_id)
    except PrincipalLookupError:
        raise PrincipalNotFound(
            'principal %r is unknown to the authentication utility %r of '
            'the site; start the work as an existing user, or register '
            'the principal' % (principal_id, auth)) from None


def check_principal_found(principal, principal_id):
    """In the runner, after a ``getPrincipal()`` (perhaps an override):
    PrincipalNotFound when it answered None for a named user on a site
    that checks security."""
    if (principal is None and principal_id is not None
            and authentication_utility() is not None):
        raise PrincipalNotFound(
            'getPrincipal(%r) found no principal on a site that checks '
            'security; the work never runs unchecked: raise '
            'PrincipalNotFound in getPrincipal(), or name an existing '
            'user' % (principal_id,))


def begin_interaction(principal):
    """Begin this thread's interaction for ``principal`` (None: no
    participation) and return the participation (or None).  The thread
    must have no interaction."""
    if principal is None:
        newInteraction()
        return None
    participation = Participation(principal)
    newInteraction(participation)
    return participation


def end_interaction(participation=None, interaction=None):
    """End the interaction begun by :func:`begin_interaction` and give
    zope.security's "previous interaction" slot back what it held before.

    ``restoreInteraction()`` makes the slot's old value current (or
    clears the current one when the slot was empty), and
    ``endInteraction()`` moves it back into the slot: no principal of the
    unit survives it in the thread, and only public calls are used.
    The ``participation`` begin_interaction() returned is let go of its
    interaction, breaking the cycle the security policy made between
    them (which would otherwise wait for the garbage collector).

    If the code of the unit ended or replaced ``interaction`` itself, the
    slot's old value cannot be had back with public calls: then both the
    current interaction and the slot are cleared, so that no principal of
    the unit is left behind either way.
    """
    if interaction is None or queryInteraction() is interaction:
        restoreInteraction()
        endInteraction()
    else:
        endInteraction()  # the current one (if any) goes into the slot...
        endInteraction()  # ...and out of it
    if participation is not None:
        participation.interaction = None
