package portal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Teams: a key may belong to a team (keystore.Record.Team) rather than to
// the developer who made it. Every current member of the team sees and
// manages it, whoever made it; when its maker leaves the team, they no
// longer see it, and it keeps working. A visitor's teams are the groups
// the identity provider names (Policy.TeamGroups may narrow which count)
// and the operator's teams (Policy.Teams) that list them.

// Bounds on a visitor's teams: at most MaxTeams, each named by
// keystore.CheckTeam's rules (at most keystore.MaxTeamLength bytes); more
// groups, and groups with other names, are ignored. At most maxGroupScan
// entries of a groups header are looked at.
const (
	MaxTeams     = 64
	maxGroupScan = 1024
)

// Team is a team an operator defines: its name and members.
type Team struct {
	// Name names the team, as records' team field does.
	Name string
	// Members are the users ({http.auth.user.id}, or the portal's user
	// placeholder) in the team.
	Members []string
}

// checkTeams checks the operator's teams and the team groups.
func (p *Policy) checkTeams() error {
	seen := map[string]bool{}
	for _, t := range p.Teams {
		if err := keystore.CheckTeam(t.Name); err != nil {
			return fmt.Errorf("team %q: %w", t.Name, err)
		}
		if seen[t.Name] {
			return fmt.Errorf("team %s is defined twice", t.Name)
		}
		seen[t.Name] = true
		if len(t.Members) == 0 {
			return fmt.Errorf("team %s: name its members", t.Name)
		}
		if slices.Contains(t.Members, "") {
			return fmt.Errorf("team %s: a member's name is empty", t.Name)
		}
	}
	for _, g := range p.TeamGroups {
		if err := keystore.CheckTeam(g); err != nil {
			return fmt.Errorf("team_groups %q: %w", g, err)
		}
	}
	return nil
}

// teamsOf are the teams of user, whose identity provider named groups (a
// list separated by commas or white space, as oauth2-proxy's
// X-Auth-Request-Groups): the operator's teams that list them, then
// their groups (those of TeamGroups, when it is set; never one named as an
// operator's team), sorted, at most MaxTeams.
func (p *Policy) teamsOf(user, groups string) []string {
	var teams []string
	for _, t := range p.Teams {
		if slices.Contains(t.Members, user) {
			teams = append(teams, t.Name)
		}
	}
	scanned := 0
	for rest := groups; rest != "" && len(teams) < MaxTeams && scanned < maxGroupScan; scanned++ {
		rest = strings.TrimLeft(rest, ", \t")
		end := strings.IndexAny(rest, ", \t")
		if end < 0 {
			end = len(rest)
		}
		g := rest[:end]
		rest = rest[end:]
		if g == "" || keystore.CheckTeam(g) != nil || slices.Contains(teams, g) || p.defines(g) {
			// An operator's team is its members list alone: a group of
			// the same name at the identity provider does not join it.
			continue
		}
		if len(p.TeamGroups) > 0 && !slices.Contains(p.TeamGroups, g) {
			continue
		}
		teams = append(teams, g)
	}
	teams = teams[:min(len(teams), MaxTeams)]
	slices.Sort(teams)
	return teams
}

// defines reports whether the operator defines a team named name.
func (p *Policy) defines(name string) bool {
	return slices.ContainsFunc(p.Teams, func(t Team) bool { return t.Name == name })
}

// members are the operator-defined members of team: the ones the portal
// knows without a visit (an identity provider's groups are known only
// from each member's own requests).
func (p *Policy) members(team string) []string {
	for _, t := range p.Teams {
		if t.Name == team {
			return t.Members
		}
	}
	return nil
}

// inTeam reports whether the visitor is a member of team now.
func (v *visit) inTeam(team string) bool { return team != "" && slices.Contains(v.teams, team) }

// holds reports whether a key is the visitor's own: a personal key they
// made, or a key of one of their teams (whoever made it). A team key's
// maker who left the team no longer holds it.
func (v *visit) holds(rec keystore.Record) bool {
	if rec.Team != "" {
		return v.inTeam(rec.Team)
	}
	return rec.Owner == v.user
}

// ownerText says whose a key is: "team ml" or its owner.
func ownerText(rec keystore.Record) string {
	if rec.Team != "" {
		return "team " + rec.Team
	}
	return rec.Owner
}

// myRecords are the visitor's keys: their personal keys and their teams'
// keys, newest first, at most maxOwnKeys.
func (v *visit) myRecords(ctx context.Context) ([]keystore.Record, error) {
	recs, err := v.s.ownRecords(ctx, keystore.ListQuery{Owner: v.user})
	if err != nil {
		return nil, err
	}
	// Their team keys come with their teams; keys they made for a team
	// they left are not theirs.
	recs = slices.DeleteFunc(recs, func(rec keystore.Record) bool { return rec.Team != "" })
	for _, team := range v.teams {
		of, err := v.s.ownRecords(ctx, keystore.ListQuery{Team: team})
		if err != nil {
			return nil, err
		}
		recs = append(recs, of...)
	}
	if len(v.teams) > 0 {
		slices.SortStableFunc(recs, newestFirst)
	}
	return recs[:min(len(recs), maxOwnKeys)], nil
}

// ownerChoice is an owner the create form offers: "" for the visitor.
type ownerChoice struct {
	Team    string
	Checked bool
}

// ownerChoices are the owners a new key may have: the visitor, and each
// of their teams; none when they are in no team.
func (v *visit) ownerChoices(chosen string) []ownerChoice {
	if len(v.teams) == 0 {
		return nil
	}
	out := []ownerChoice{{"", chosen == ""}}
	for _, t := range v.teams {
		out = append(out, ownerChoice{t, chosen == t})
	}
	return out
}

// errNotInTeam refuses a key made for a team the visitor is not in.
var errNotInTeam = errors.New("you are not a member of that team")

// teamNotices are the notices about team keys, per team, the last
// MaxNotices of each: every current member sees them on their
// Notifications page. The teams are those of the store's keys.
type teamNotices struct {
	mu sync.Mutex
	of map[string][]Notice
}

func (tn *teamNotices) add(team string, n Notice) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.of == nil {
		tn.of = map[string][]Notice{}
	}
	tn.of[team] = appendBounded(tn.of[team], n, MaxNotices)
}

// tellTeam tells a team of what happened to one of its keys: on the
// Notifications page of every member, and at the webhooks of the members
// the operator lists (an identity provider's members are not known
// between their visits).
func (s *Server) tellTeam(team string, n Notice) {
	s.teamNotes.add(team, n)
	for _, m := range s.policy.members(team) {
		s.notes.notify(m, n)
	}
}

// noticesOf are the visitor's notices, newest first: their own and their
// teams', at most MaxNotices (a notice an operator-listed member was also
// sent once).
func (v *visit) noticesOf(own []Notice) []Notice {
	if len(v.teams) == 0 {
		return own
	}
	out := slices.Clone(own)
	v.s.teamNotes.mu.Lock()
	for _, t := range v.teams {
		for _, n := range v.s.teamNotes.of[t] {
			if !slices.ContainsFunc(out, func(o Notice) bool {
				return o.Event == n.Event && o.KeyID == n.KeyID && o.Time.Equal(n.Time)
			}) {
				out = append(out, n)
			}
		}
	}
	v.s.teamNotes.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Notice) int { return b.Time.Compare(a.Time) })
	return out[:min(len(out), MaxNotices)]
}
