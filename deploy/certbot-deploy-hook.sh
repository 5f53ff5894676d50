#!/bin/sh
# certbot deploy hook: copies a renewed certificate where chatrelay, running
# as the unit's dynamic user, can read it. chatrelay notices the new files at
# the next TLS handshake: no restart.
#
# Once:
#   groupadd --system chatrelay-tls
#   install -d -m 0750 -g chatrelay-tls /etc/chatrelay/tls
#   install -m 0755 deploy/certbot-deploy-hook.sh /etc/letsencrypt/renewal-hooks/deploy/chatrelay
#   systemctl edit chatrelay        # add:  [Service]
#                                   #       SupplementaryGroups=chatrelay-tls
#   RENEWED_LINEAGE=/etc/letsencrypt/live/relay.example.com /etc/letsencrypt/renewal-hooks/deploy/chatrelay
# and in chatrelay.yaml:
#   tls: {cert_file: /etc/chatrelay/tls/fullchain.pem, key_file: /etc/chatrelay/tls/privkey.pem}
set -eu
: "${RENEWED_LINEAGE:?run by certbot as a deploy hook, or set RENEWED_LINEAGE to the live/<domain> directory}"
dir=${CHATRELAY_TLS_DIR:-/etc/chatrelay/tls}
group=${CHATRELAY_TLS_GROUP:-chatrelay-tls}
# Written beside the targets, then renamed over them: a reader sees the old
# file or the new one, never half of one.
install -m 0644 "$RENEWED_LINEAGE/fullchain.pem" "$dir/.fullchain.pem.new"
install -m 0640 -g "$group" "$RENEWED_LINEAGE/privkey.pem" "$dir/.privkey.pem.new"
mv -f "$dir/.fullchain.pem.new" "$dir/fullchain.pem"
mv -f "$dir/.privkey.pem.new" "$dir/privkey.pem"
