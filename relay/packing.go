package relay

import (
	"context"
	"errors"
)

// packer puts the turns that are due at once (heads of different
// conversations) into one message, for a sink that packs (Packer). A busy
// chatbot then still mirrors in near real time into a channel that takes
// one message per second: the pace decides when the next message may go,
// and everything that became due meanwhile goes in it.
type packer struct {
	d    *Dispatcher
	sink Packer
}

// deliver sends del with whatever else is due now and may share its
// message, and settles them. A turn that cannot share a message goes
// alone.
func (p *packer) deliver(ctx, drain context.Context, del *Delivery) {
	d := p.d
	first, err := Redact(del.Event, d.cfg.Redact)
	if err != nil {
		d.deliver(ctx, drain, del, Ticket{}) // parks it, saying why
		return
	}
	ok, err := p.canPack(drain, del, first)
	switch {
	case err != nil:
		d.settle(drain, []*Delivery{del}, Ticket{}, err)
		return
	case !ok:
		d.sendOne(ctx, drain, del, first, Ticket{})
		return
	}
	batch, evs := p.gather(ctx, drain, del, first)
	if len(batch) == 1 {
		d.sendOne(ctx, drain, del, first, Ticket{})
		return
	}
	sent := 0
	err = d.send(ctx, drain, Ticket{}, batch, func(ctx context.Context) error {
		n, rep, err := p.sink.SendPacked(ctx, evs)
		sent = n
		d.paced(rep)
		return err
	})
	if err != nil {
		if class, _ := Classify(err); class == ClassPermanent && drain.Err() == nil {
			// The platform refused the packed message; each turn may well
			// go through alone, so none is parked for what another did.
			d.cfg.Logger.Warn("packed message refused; sending its turns one by one", "events", len(batch), "err", err)
			p.oneByOne(ctx, drain, batch)
			return
		}
		d.settle(drain, batch, Ticket{}, err)
		return
	}
	if sent < 1 || sent > len(batch) {
		d.cfg.Logger.Error("sink reported an impossible number of packed turns; sending them again",
			"sent", sent, "events", len(batch))
		sent = 0
	}
	// What did not fit goes in a later message, in its place.
	for _, rest := range batch[sent:] {
		d.release(drain, rest)
	}
	if sent > 1 {
		d.cfg.Metrics.PackedEvents.WithLabelValues(d.name).Add(float64(sent))
		d.cfg.Logger.Debug("packed several turns into one message", "events", sent)
	}
	d.succeeded(drain, batch[:sent], Ticket{})
}

// gather adds to del what is due now (Queue.TryNext: it never waits) and
// may share its message, up to the sink's MaxPack, in the order the queue
// hands them out. A turn that cannot share a message is handed back, to go
// alone on a ticket of its own.
func (p *packer) gather(ctx, drain context.Context, del *Delivery, first *Event) ([]*Delivery, []*Event) {
	d := p.d
	batch, evs := []*Delivery{del}, []*Event{first}
	for len(batch) < p.sink.MaxPack() {
		more, err := d.cfg.Queue.TryNext(ctx)
		if err != nil && ctx.Err() == nil && !errors.Is(err, ErrClosed) {
			d.cfg.Logger.Warn("could not gather turns to pack; sending what was gathered", "events", len(batch), "err", err)
		}
		if more == nil {
			break
		}
		d.cfg.Accepting.Wait(ctx, more.Event.ID)
		ev, err := Redact(more.Event, d.cfg.Redact)
		if err != nil {
			d.park(drain, more, "could not redact the event: "+err.Error())
			continue
		}
		ok, err := p.canPack(drain, more, ev)
		if err != nil {
			d.settle(drain, []*Delivery{more}, Ticket{}, err)
			continue
		}
		if !ok {
			d.release(drain, more)
			break
		}
		batch, evs = append(batch, more), append(evs, ev)
	}
	return batch, evs
}

// oneByOne sends the turns of a refused packed message alone, each on a
// ticket of its own.
func (p *packer) oneByOne(ctx, drain context.Context, batch []*Delivery) {
	d := p.d
	for _, del := range batch {
		tk, err := d.admit(ctx)
		if err != nil {
			d.release(context.WithoutCancel(drain), del) // shutting down: it stays for the next start
			continue
		}
		d.deliver(ctx, drain, del, tk)
	}
}

// canPack asks the sink whether ev, del's event as the sink sees it, may
// share a message, under guard.
func (p *packer) canPack(ctx context.Context, del *Delivery, ev *Event) (ok bool, err error) {
	err = p.d.guard(func() error {
		ok = p.sink.CanPack(ctx, ev)
		return nil
	}, del)
	return ok, err
}
