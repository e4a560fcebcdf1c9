// The system's libcrypt (libxcrypt on Debian): bcrypt ($2b$/$2y$) for htpasswd files.
#include <crypt.h>
