package admin

import (
	"net/http"
)

// ConversationView is a conversation as the API shows it: its events in
// acceptance order, each with where its deliveries stand.
type ConversationView struct {
	ID string `json:"conversation_id"`
	// Total is how many events of the conversation the store holds;
	// Events are the last of them (limit, default 500).
	Total  int         `json:"total"`
	Events []EventView `json:"events"`
}

func (a *api) conversation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	recs, total, err := a.cfg.Store.Conversation(r.Context(), id, intParam(r, "limit", 500))
	if err != nil {
		a.fail(w, err)
		return
	}
	if total == 0 {
		writeError(w, http.StatusNotFound, "no event of this conversation is in the store")
		return
	}
	out := ConversationView{ID: id, Total: total, Events: make([]EventView, 0, len(recs))}
	for _, rec := range recs {
		v := view(rec.Event)
		v.Deliveries = rec.Deliveries
		for i := range v.Deliveries {
			v.Deliveries[i].LastError = a.cfg.Scrub.Scrub(v.Deliveries[i].LastError)
		}
		out.Events = append(out.Events, v)
	}
	writeJSON(w, http.StatusOK, out)
}
