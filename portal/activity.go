package portal

import (
	"github.com/moodmnky/caddy-apikey/activity"
)

// activityView is what the usage page of one key shows of its activity on
// this instance: its refusals by reason, its requests and tokens per
// model, and its last requests.
type activityView struct {
	KeyID    string
	Since    string
	Refusals []activity.Refusal
	Models   []activity.Model
	Log      []activity.LogLine
	// LogSize and MaxModels are the bounds, for the page to state.
	LogSize, MaxModels int
}

// activityOf is the activity of the key the usage page shows, if the
// visitor may see it (mayRead) and the portal reads activity; nil else.
func (v *visit) activityOf(keyID string, mayRead bool) *activityView {
	if keyID == "" || !mayRead || v.s.backend.Activity == nil {
		return nil
	}
	av := &activityView{KeyID: keyID, LogSize: activity.LogSize, MaxModels: activity.MaxModels}
	if snap, ok := v.s.backend.Activity.Of(keyID); ok {
		av.Since = snap.Since.Format("2006-01-02 15:04 UTC")
		av.Refusals, av.Models, av.Log = snap.Refusals, snap.Models, snap.Log
	}
	return av
}
