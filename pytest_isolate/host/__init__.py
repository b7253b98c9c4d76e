"""What this host allows, found once per session in pytest's process (and by the doctor).

``probe`` tries each part of a sandbox in a throwaway child; ``cgroup_choice`` finds the
cgroups to use (the host's, a named subtree, or one delegated to this user);
``isolation`` decides from the results what the session's isolated tests get, and words
the header line, the one warning and the strict error. ``checks`` and ``userns`` hold
what they share.
"""
