# Manual pages of mnd: mnd(8), mnd.conf(5).
